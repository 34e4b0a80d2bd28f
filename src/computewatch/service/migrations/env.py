"""Alembic environment of the service's tables: runs on the connection `computewatch.service.db.upgrade`
hands over, with its own version table so the register's chain is untouched."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the service's migrations through computewatch (`computewatch serve --db URL`)")
context.configure(connection=connection, target_metadata=None, version_table="service_alembic_version")
with context.begin_transaction():
    context.run_migrations()
