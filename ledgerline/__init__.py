"""Ledgerline's launcher: the console script, the local stack and migrations, above every process."""
