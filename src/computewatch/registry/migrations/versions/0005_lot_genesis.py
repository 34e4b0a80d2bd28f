"""Lot genesis: a chip registered with its whole lot points at the lot (`items.genesis_lot_id`)
and has no custody row of its own for its creation; its first custody record (seq 0, "create",
to the chipmaker, "certified by <chipmaker> in lot <lot>", at the lot's registration time) is
the lot's, read back from `chip_lots` with the same record digest (docs/registry.md, "Lots").
Chips registered before this revision keep their stored records; nothing is rewritten.

Revision ID: 0005_lot_genesis
Revises: 0004_locations
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_lot_genesis"
down_revision = "0004_locations"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its reference in one ALTER (Alembic would ask for a table copy).
        op.execute("ALTER TABLE items ADD COLUMN genesis_lot_id INTEGER REFERENCES chip_lots (id)")
        return
    op.add_column("items", sa.Column("genesis_lot_id", ID, nullable=True))
    op.create_foreign_key("fk_items_genesis_lot_id_chip_lots", "items", "chip_lots", ["genesis_lot_id"], ["id"])


def downgrade() -> None:
    raise NotImplementedError("the register is never downgraded: restore a backup instead")
