"""The register's tables (SQLAlchemy Core), as the Alembic migrations leave them at head.

The migrations in `migrations/versions` create these tables; this module describes the result
for queries, and a test checks that the two agree on SQLite and PostgreSQL. Times are ISO-8601
UTC strings (`2026-05-20T12:00:00.000000Z`): they sort as text, compare the same on every
backend and go into digests unchanged.

History tables (`custody`, `exemptions`, `tree_heads`, `inspections`) are append-only: database
triggers refuse UPDATE and DELETE, so a correction is always a new record. The current state of
an item (holder, custody sequence, status, exemption, facility) is cached on `items` and changed
only in the transaction that appends the record explaining the change.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "APPEND_ONLY_TABLES",
    "CUSTODY_KINDS",
    "ITEM_KINDS",
    "ITEM_STATUSES",
    "ROLES",
    "chip_lots",
    "custody",
    "declared_runs",
    "exemptions",
    "explanations",
    "facilities",
    "flags",
    "inspections",
    "investigations",
    "items",
    "landmarks",
    "location_nonces",
    "locations",
    "lots",
    "metadata",
    "parties",
    "plans",
    "register_meta",
    "tree_heads",
]

ROLES = ("chipmaker", "owner", "inspector", "fab")
ITEM_KINDS = ("wafer", "die", "chip")
# active: in service; packaged: a die that became a chip; lost/destroyed: gone, its last holder
# answers for it; damaged: still exists (and can be inspected).
ITEM_STATUSES = ("active", "packaged", "lost", "damaged", "destroyed")
CUSTODY_KINDS = ("create", "transfer", "carried", "lost", "damaged", "destroyed", "found", "packaged")
APPEND_ONLY_TABLES = ("custody", "exemptions", "tree_heads", "inspections", "locations", "location_nonces")

_TIME = 32  # length of an ISO-8601 UTC time string
# 64-bit keys on PostgreSQL (a world register outgrows 2**31 custody records); on SQLite a key must
# be declared INTEGER to be the rowid, which is 64-bit anyway.
_ID = BigInteger().with_variant(Integer(), "sqlite")
_HEX32 = 64
_COORD = 32  # a coordinate or distance as Python's repr of a float: exact on every backend

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


register_meta = Table(
    "register_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

parties = Table(
    "parties",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("public_key", LargeBinary, nullable=False, unique=True),
    Column("keyid", String(_HEX32), nullable=False),
    Column("info", Text, nullable=False),  # canonical JSON: role-specific attributes (a fab's node)
    Column("created_at", String(_TIME), nullable=False),
    CheckConstraint(_in("role", ROLES), name="role"),
)

facilities = Table(
    "facilities",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("owner_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", String(_TIME), nullable=False),
    # Revision 0003: the declared site (degrees), against which location evidence is checked.
    Column("latitude", String(_COORD), nullable=True),
    Column("longitude", String(_COORD), nullable=True),
    UniqueConstraint("owner_id", "name"),
)

lots = Table(
    "lots",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("fab_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("label", String(200), nullable=False, unique=True),
    Column("wafers", Integer, nullable=False),
    Column("dies_per_wafer", Integer, nullable=False),
    Column("produced_at", String(_TIME), nullable=False),
)

# Lot certificates a chipmaker signed (docs/registry.md, "Lots"): one per (chipmaker, lot id).
chip_lots = Table(
    "chip_lots",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("chipmaker_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("label", String(64), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("root", String(_HEX32), nullable=False),
    Column("manifest", LargeBinary, nullable=False),  # the DSSE envelope as received
    Column("registered_at", String(_TIME), nullable=False),
    UniqueConstraint("chipmaker_id", "label"),
)

items = Table(
    "items",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("label", String(200), nullable=False, unique=True),  # a chip's label is its serial
    Column("parent_id", _ID, ForeignKey("items.id"), nullable=True),
    Column("lot_id", _ID, ForeignKey("lots.id"), nullable=True),
    Column("fab_id", _ID, ForeignKey("parties.id"), nullable=True),
    Column("chipmaker_id", _ID, ForeignKey("parties.id"), nullable=True),
    Column("holder_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("facility_id", _ID, ForeignKey("facilities.id"), nullable=True),
    Column("custody_seq", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("exempt", String(16), nullable=True),
    Column("device_key", LargeBinary, nullable=True, unique=True),
    Column("model", String(200), nullable=True),
    Column("peak_flops", BigInteger, nullable=True),
    Column("certificate", LargeBinary, nullable=True),
    Column("registered_at", String(_TIME), nullable=False),
    # Revision 0005: a chip registered with its whole lot; its creation record is the lot's
    # (no custody row of its own for seq 0: `genesis_row` in registry/_genesis.py reads it back).
    Column("genesis_lot_id", _ID, ForeignKey("chip_lots.id"), nullable=True),
    CheckConstraint(_in("kind", ITEM_KINDS), name="kind"),
    CheckConstraint(_in("status", ITEM_STATUSES), name="status"),
    Index("ix_items_holder_id_kind_status", "holder_id", "kind", "status"),
    # Revision 0006: only items with a parent (a whole lot's chips have none).
    Index("ix_items_parent_id", "parent_id", sqlite_where=text("parent_id IS NOT NULL"),
          postgresql_where=text("parent_id IS NOT NULL")),
)

custody = Table(
    "custody",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("item_id", _ID, ForeignKey("items.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("from_id", _ID, ForeignKey("parties.id"), nullable=True),
    Column("to_id", _ID, ForeignKey("parties.id"), nullable=True),
    Column("facility_id", _ID, ForeignKey("facilities.id"), nullable=True),
    Column("statement", LargeBinary, nullable=True),  # the signed DSSE envelope, as submitted
    Column("note", Text, nullable=False),
    Column("recorded_at", String(_TIME), nullable=False),
    Column("record_digest", String(_HEX32), nullable=True),  # revision 0002: the per-item hash chain
    # The backstop against two concurrent changes: one sequence number, one record.
    UniqueConstraint("item_id", "seq"),
    CheckConstraint(_in("kind", CUSTODY_KINDS), name="kind"),
)

exemptions = Table(
    "exemptions",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("item_id", _ID, ForeignKey("items.id"), nullable=False),
    Column("action", String(8), nullable=False),
    Column("category", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", String(_TIME), nullable=False),
    CheckConstraint("action IN ('grant', 'revoke')", name="action"),
    Index("ix_exemptions_item_id", "item_id"),
)

investigations = Table(
    "investigations",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("party_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(8), nullable=False),
    Column("opened_at", String(_TIME), nullable=False),
    Column("closed_at", String(_TIME), nullable=True),
    Column("outcome", Text, nullable=True),
    CheckConstraint("status IN ('open', 'closed')", name="status"),
)

flags = Table(
    "flags",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("label", String(200), nullable=False),
    Column("item_id", _ID, ForeignKey("items.id"), nullable=True),
    Column("party_id", _ID, ForeignKey("parties.id"), nullable=True),  # who answers for it
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("investigation_id", _ID, ForeignKey("investigations.id"), nullable=True),
    Column("created_at", String(_TIME), nullable=False),
)

plans = Table(
    "plans",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("period", String(64), nullable=False),
    Column("stockpile", String(1000), nullable=False),  # sorted owner names joined by '+', or '*'
    Column("document", LargeBinary, nullable=False),  # canonical JSON the commitment hashes
    Column("commitment", String(_HEX32), nullable=False, unique=True),
    Column("population", LargeBinary, nullable=False),  # zlib of the sorted serials, one a line
    Column("samples", Integer, nullable=False),
    Column("period_end", String(_TIME), nullable=False),
    Column("created_at", String(_TIME), nullable=False),
    Column("seed", String(_HEX32), nullable=True),
    Column("revealed_at", String(_TIME), nullable=True),
    # One plan per stockpile and period: a Verifier cannot commit several and keep the one it likes.
    UniqueConstraint("period", "stockpile"),
)

inspections = Table(
    "inspections",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("item_id", _ID, ForeignKey("items.id"), nullable=False),
    Column("plan_id", _ID, ForeignKey("plans.id"), nullable=True),
    Column("holder_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("inspector_id", _ID, ForeignKey("parties.id"), nullable=True),
    Column("outcome", String(8), nullable=False),
    Column("problems", Text, nullable=False),  # JSON list
    Column("notes", Text, nullable=False),  # JSON list (audit warnings)
    Column("tree_size", BigInteger, nullable=True),
    Column("root", String(_HEX32), nullable=True),
    Column("statement", LargeBinary, nullable=False),  # canonical in-toto statement of the finding
    Column("envelope", LargeBinary, nullable=True),  # the statement signed by the inspector
    Column("evidence", LargeBinary, nullable=True),  # attestation bundle, as the chip gave it
    Column("log", LargeBinary, nullable=True),  # zlib of the log bytes read from the chip
    Column("recorded_at", String(_TIME), nullable=False),
    CheckConstraint("outcome IN ('clean', 'finding', 'refused')", name="outcome"),
    Index("ix_inspections_item_id", "item_id"),
)

tree_heads = Table(
    "tree_heads",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("item_id", _ID, ForeignKey("items.id"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", String(_HEX32), nullable=False),
    Column("source", String(16), nullable=False),
    Column("inspection_id", _ID, ForeignKey("inspections.id"), nullable=True),
    Column("evidence", LargeBinary, nullable=True),  # the signed bundle the head came from
    Column("seen_at", String(_TIME), nullable=False),
    CheckConstraint("source IN ('attestation', 'inspection')", name="source"),
    Index("ix_tree_heads_item_id", "item_id"),
)

explanations = Table(
    "explanations",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("item_id", _ID, ForeignKey("items.id"), nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("shard_digest", String(_HEX32), nullable=False),
    Column("owner_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("inspection_id", _ID, ForeignKey("inspections.id"), nullable=False),
    Column("status", String(12), nullable=False),
    Column("verdict_ref", Text, nullable=True),
    Column("updated_at", String(_TIME), nullable=False),
    UniqueConstraint("item_id", "counter", "shard_digest"),
    CheckConstraint("status IN ('pending', 'explained', 'unexplained')", name="status"),
    Index("ix_explanations_owner_id_status", "owner_id", "status"),
)

declared_runs = Table(
    "declared_runs",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("owner_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("precommitment", String(_HEX32), nullable=True),
    Column("chips", Text, nullable=False),  # JSON list of serials
    Column("declared_at", String(_TIME), nullable=False),
    UniqueConstraint("owner_id", "run_id"),
)

# Revision 0003: landmarks (registered parties with a key and declared coordinates), the
# location checks the register made from their signed round trips, and every nonce it accepted
# (a record whose nonce was seen before is a replay).
landmarks = Table(
    "landmarks",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("public_key", LargeBinary, nullable=False, unique=True),
    Column("keyid", String(_HEX32), nullable=False, unique=True),
    Column("latitude", String(_COORD), nullable=False),
    Column("longitude", String(_COORD), nullable=False),
    Column("created_at", String(_TIME), nullable=False),
)

locations = Table(
    "locations",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("item_id", _ID, ForeignKey("items.id"), nullable=False),
    Column("facility_id", _ID, ForeignKey("facilities.id"), nullable=True),
    Column("holder_id", _ID, ForeignKey("parties.id"), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("finding", Text, nullable=True),
    Column("result", Text, nullable=False),  # canonical JSON of the check's result
    Column("evidence", LargeBinary, nullable=False),  # the evidence file, as submitted
    Column("recorded_at", String(_TIME), nullable=False),
    CheckConstraint("outcome IN ('inside', 'finding')", name="outcome"),
    Index("ix_locations_item_id", "item_id"),
)

location_nonces = Table(
    "location_nonces",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("landmark_keyid", String(_HEX32), nullable=False),
    Column("nonce", String(_HEX32), nullable=False),
    Column("location_id", _ID, ForeignKey("locations.id"), nullable=False),
    UniqueConstraint("landmark_keyid", "nonce"),
)
