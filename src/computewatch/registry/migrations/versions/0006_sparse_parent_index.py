"""Sparse parent index: `ix_items_parent_id` holds only items that have a parent (dies on a
wafer, chips from a die). Every chip of a whole lot has none, and the full index spent an entry
per chip on NULL (about 1 us a chip in a lot of 10^6 on SQLite); the one query that reads it
(`parent_id = ?`: the active children of an item) implies `parent_id IS NOT NULL`, so both
databases still use it (tests/test_registry_migrations.py checks the plan).

Revision ID: 0006_sparse_parent_index
Revises: 0005_lot_genesis
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_sparse_parent_index"
down_revision = "0005_lot_genesis"
branch_labels = None
depends_on = None

_HAS_PARENT = sa.text("parent_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_items_parent_id", table_name="items")
    op.create_index("ix_items_parent_id", "items", ["parent_id"], sqlite_where=_HAS_PARENT, postgresql_where=_HAS_PARENT)


def downgrade() -> None:
    raise NotImplementedError("the register is never downgraded: restore a backup instead")
