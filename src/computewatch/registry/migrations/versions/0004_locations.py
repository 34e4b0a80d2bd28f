"""Location by signed round trips: landmarks, declared facility coordinates, location checks
and the nonces they consumed (docs/registry.md, "Location"). `locations` and `location_nonces`
are append-only, like the other history tables.

Revision ID: 0004_locations
Revises: 0003_chip_lots
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_locations"
down_revision = "0003_chip_lots"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.String(32)
HEX = sa.String(64)
COORD = sa.String(32)


def _append_only(table: str) -> None:
    # Frozen here: the same guard revision 0001 put on the history tables.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION cw_append_only()")
        op.execute(f"CREATE TRIGGER {table}_append_only_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION cw_append_only()")
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: corrections are new records'); END")


def upgrade() -> None:
    op.add_column("facilities", sa.Column("latitude", COORD, nullable=True))
    op.add_column("facilities", sa.Column("longitude", COORD, nullable=True))
    op.create_table(
        "landmarks",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("keyid", HEX, nullable=False),
        sa.Column("latitude", COORD, nullable=False),
        sa.Column("longitude", COORD, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_landmarks"),
        sa.UniqueConstraint("name", name="uq_landmarks_name"),
        sa.UniqueConstraint("public_key", name="uq_landmarks_public_key"),
        sa.UniqueConstraint("keyid", name="uq_landmarks_keyid"),
    )
    op.create_table(
        "locations",
        sa.Column("id", ID, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("facility_id", ID, nullable=True),
        sa.Column("holder_id", ID, nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("finding", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("evidence", sa.LargeBinary, nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_locations"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_locations_item_id_items"),
        sa.ForeignKeyConstraint(["facility_id"], ["facilities.id"], name="fk_locations_facility_id_facilities"),
        sa.ForeignKeyConstraint(["holder_id"], ["parties.id"], name="fk_locations_holder_id_parties"),
        sa.CheckConstraint("outcome IN ('inside', 'finding')", name="ck_locations_outcome"),
    )
    op.create_index("ix_locations_item_id", "locations", ["item_id"])
    op.create_table(
        "location_nonces",
        sa.Column("id", ID, nullable=False),
        sa.Column("landmark_keyid", HEX, nullable=False),
        sa.Column("nonce", HEX, nullable=False),
        sa.Column("location_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_location_nonces"),
        sa.ForeignKeyConstraint(["location_id"], ["locations.id"], name="fk_location_nonces_location_id_locations"),
        sa.UniqueConstraint("landmark_keyid", "nonce", name="uq_location_nonces_landmark_keyid_nonce"),
    )
    for table in ("locations", "location_nonces"):
        _append_only(table)


def downgrade() -> None:
    raise NotImplementedError("the register is never downgraded: restore a backup instead")
