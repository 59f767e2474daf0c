"""Alembic migrations of the read-model and reporting schemas."""
