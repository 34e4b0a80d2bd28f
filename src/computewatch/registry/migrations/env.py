"""Alembic environment: migrations run on the connection `computewatch.registry.db.upgrade`
hands over (inside its transaction and lock), never on a URL of their own."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the register's migrations through computewatch (`computewatch registry init --db URL`)")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
