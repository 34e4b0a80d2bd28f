"""Chip lots: the lot manifests (lot certificates) chipmakers signed, one row per lot, so a
lot id is used once per chipmaker and a second manifest for it (another root) is refused.

Revision ID: 0003_chip_lots
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_chip_lots"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chip_lots",
        sa.Column("id", ID, nullable=False),
        sa.Column("chipmaker_id", ID, nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("manifest", sa.LargeBinary, nullable=False),
        sa.Column("registered_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chip_lots"),
        sa.ForeignKeyConstraint(["chipmaker_id"], ["parties.id"], name="fk_chip_lots_chipmaker_id_parties"),
        sa.UniqueConstraint("chipmaker_id", "label", name="uq_chip_lots_chipmaker_id_label"),
    )


def downgrade() -> None:
    raise NotImplementedError("the register is never downgraded: restore a backup instead")
