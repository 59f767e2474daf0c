"""Ledgerline: settings, process wiring and the local stack."""
