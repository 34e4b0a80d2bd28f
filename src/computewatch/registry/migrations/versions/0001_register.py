"""The register: parties, fabs' lots, items (wafers, dies, chips), custody, exemptions,
investigations, flags, inspection plans, inspections, the witness's tree heads, the explanation
queue and declared runs. History tables are append-only (triggers refuse UPDATE and DELETE).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.String(32)
HEX = sa.String(64)
APPEND_ONLY = ("custody", "exemptions", "tree_heads", "inspections")


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=f"pk_{table}")


def _fk(table: str, column: str, ref: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{ref}.id"], name=f"fk_{table}_{column}_{ref}")


def _uq(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=f"uq_{table}_{'_'.join(columns)}")


def _ck(table: str, name: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=f"ck_{table}_{name}")


def _append_only(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION cw_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION cw_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: corrections are new records'); END"
            )


def upgrade() -> None:
    op.create_table(
        "register_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_register_meta"),
    )
    op.create_table(
        "parties",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("keyid", HEX, nullable=False),
        sa.Column("info", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        _pk("parties"),
        _uq("parties", "name"),
        _uq("parties", "public_key"),
        _ck("parties", "role", "role", ("chipmaker", "owner", "inspector", "fab")),
    )
    op.create_table(
        "facilities",
        sa.Column("id", ID, nullable=False),
        sa.Column("owner_id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        _pk("facilities"),
        _fk("facilities", "owner_id", "parties"),
        _uq("facilities", "owner_id", "name"),
    )
    op.create_table(
        "lots",
        sa.Column("id", ID, nullable=False),
        sa.Column("fab_id", ID, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("wafers", sa.Integer, nullable=False),
        sa.Column("dies_per_wafer", sa.Integer, nullable=False),
        sa.Column("produced_at", TIME, nullable=False),
        _pk("lots"),
        _fk("lots", "fab_id", "parties"),
        _uq("lots", "label"),
    )
    op.create_table(
        "items",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("lot_id", ID, nullable=True),
        sa.Column("fab_id", ID, nullable=True),
        sa.Column("chipmaker_id", ID, nullable=True),
        sa.Column("holder_id", ID, nullable=False),
        sa.Column("facility_id", ID, nullable=True),
        sa.Column("custody_seq", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exempt", sa.String(16), nullable=True),
        sa.Column("device_key", sa.LargeBinary, nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("peak_flops", sa.BigInteger, nullable=True),
        sa.Column("certificate", sa.LargeBinary, nullable=True),
        sa.Column("registered_at", TIME, nullable=False),
        _pk("items"),
        _fk("items", "parent_id", "items"),
        _fk("items", "lot_id", "lots"),
        _fk("items", "fab_id", "parties"),
        _fk("items", "chipmaker_id", "parties"),
        _fk("items", "holder_id", "parties"),
        _fk("items", "facility_id", "facilities"),
        _uq("items", "label"),
        _uq("items", "device_key"),
        _ck("items", "kind", "kind", ("wafer", "die", "chip")),
        _ck("items", "status", "status", ("active", "packaged", "lost", "damaged", "destroyed")),
    )
    op.create_index("ix_items_holder_id_kind_status", "items", ["holder_id", "kind", "status"])
    op.create_index("ix_items_parent_id", "items", ["parent_id"])
    op.create_table(
        "custody",
        sa.Column("id", ID, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_id", ID, nullable=True),
        sa.Column("to_id", ID, nullable=True),
        sa.Column("facility_id", ID, nullable=True),
        sa.Column("statement", sa.LargeBinary, nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        _pk("custody"),
        _fk("custody", "item_id", "items"),
        _fk("custody", "from_id", "parties"),
        _fk("custody", "to_id", "parties"),
        _fk("custody", "facility_id", "facilities"),
        _uq("custody", "item_id", "seq"),
        _ck(
            "custody",
            "kind",
            "kind",
            ("create", "transfer", "carried", "lost", "damaged", "destroyed", "found", "packaged"),
        ),
    )
    op.create_table(
        "exemptions",
        sa.Column("id", ID, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        _pk("exemptions"),
        _fk("exemptions", "item_id", "items"),
        _ck("exemptions", "action", "action", ("grant", "revoke")),
    )
    op.create_index("ix_exemptions_item_id", "exemptions", ["item_id"])
    op.create_table(
        "investigations",
        sa.Column("id", ID, nullable=False),
        sa.Column("party_id", ID, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("opened_at", TIME, nullable=False),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
        _pk("investigations"),
        _fk("investigations", "party_id", "parties"),
        _ck("investigations", "status", "status", ("open", "closed")),
    )
    op.create_table(
        "flags",
        sa.Column("id", ID, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("item_id", ID, nullable=True),
        sa.Column("party_id", ID, nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("investigation_id", ID, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        _pk("flags"),
        _fk("flags", "item_id", "items"),
        _fk("flags", "party_id", "parties"),
        _fk("flags", "investigation_id", "investigations"),
    )
    op.create_table(
        "plans",
        sa.Column("id", ID, nullable=False),
        sa.Column("period", sa.String(64), nullable=False),
        sa.Column("stockpile", sa.String(1000), nullable=False),
        sa.Column("document", sa.LargeBinary, nullable=False),
        sa.Column("commitment", HEX, nullable=False),
        sa.Column("population", sa.LargeBinary, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("period_end", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("seed", HEX, nullable=True),
        sa.Column("revealed_at", TIME, nullable=True),
        _pk("plans"),
        _uq("plans", "commitment"),
        _uq("plans", "period", "stockpile"),
    )
    op.create_table(
        "inspections",
        sa.Column("id", ID, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("plan_id", ID, nullable=True),
        sa.Column("holder_id", ID, nullable=False),
        sa.Column("inspector_id", ID, nullable=True),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("problems", sa.Text, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=True),
        sa.Column("root", HEX, nullable=True),
        sa.Column("statement", sa.LargeBinary, nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=True),
        sa.Column("evidence", sa.LargeBinary, nullable=True),
        sa.Column("log", sa.LargeBinary, nullable=True),
        sa.Column("recorded_at", TIME, nullable=False),
        _pk("inspections"),
        _fk("inspections", "item_id", "items"),
        _fk("inspections", "plan_id", "plans"),
        _fk("inspections", "holder_id", "parties"),
        _fk("inspections", "inspector_id", "parties"),
        _ck("inspections", "outcome", "outcome", ("clean", "finding", "refused")),
    )
    op.create_index("ix_inspections_item_id", "inspections", ["item_id"])
    op.create_table(
        "tree_heads",
        sa.Column("id", ID, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", HEX, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("inspection_id", ID, nullable=True),
        sa.Column("evidence", sa.LargeBinary, nullable=True),
        sa.Column("seen_at", TIME, nullable=False),
        _pk("tree_heads"),
        _fk("tree_heads", "item_id", "items"),
        _fk("tree_heads", "inspection_id", "inspections"),
        _ck("tree_heads", "source", "source", ("attestation", "inspection")),
    )
    op.create_index("ix_tree_heads_item_id", "tree_heads", ["item_id"])
    op.create_table(
        "explanations",
        sa.Column("id", ID, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("counter", sa.BigInteger, nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("shard_digest", HEX, nullable=False),
        sa.Column("owner_id", ID, nullable=False),
        sa.Column("inspection_id", ID, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("verdict_ref", sa.Text, nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        _pk("explanations"),
        _fk("explanations", "item_id", "items"),
        _fk("explanations", "owner_id", "parties"),
        _fk("explanations", "inspection_id", "inspections"),
        _uq("explanations", "item_id", "counter", "shard_digest"),
        _ck("explanations", "status", "status", ("pending", "explained", "unexplained")),
    )
    op.create_index("ix_explanations_owner_id_status", "explanations", ["owner_id", "status"])
    op.create_table(
        "declared_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("owner_id", ID, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("precommitment", HEX, nullable=True),
        sa.Column("chips", sa.Text, nullable=False),
        sa.Column("declared_at", TIME, nullable=False),
        _pk("declared_runs"),
        _fk("declared_runs", "owner_id", "parties"),
        _uq("declared_runs", "owner_id", "run_id"),
    )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION cw_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION '% is append-only: corrections are new records', TG_TABLE_NAME; END $$"
        )
    for table in APPEND_ONLY:
        _append_only(table)

    # The register's identity: custody statements name it, so a signature made for one register
    # cannot be replayed at another.
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    meta = sa.table("register_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.bulk_insert(meta, [{"key": "register_id", "value": uuid.uuid4().hex}, {"key": "created_at", "value": now}])


def downgrade() -> None:
    raise NotImplementedError("the register is never downgraded: restore a backup instead")
