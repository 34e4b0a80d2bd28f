"""Alembic migrations of the register (run by `computewatch.registry.db.upgrade`)."""
