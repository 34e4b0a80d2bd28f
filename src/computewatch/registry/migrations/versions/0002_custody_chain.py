"""Custody hash chain: every custody record gets `record_digest`, the SHA-256 of its canonical
record, which names the digest of the item's previous record (docs/registry.md, "Custody
records"). Existing records are chained in sequence order. The record format is frozen here
(version 1), so this migration computes the same digests whatever later code does.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

from computewatch.crypto.canonical import canonical_json

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS = "00" * 32
_BATCH = 5000


def _record_v1(register: str, row: sa.Row, prev: str) -> dict:
    statement = None if row.statement is None else hashlib.sha256(bytes(row.statement)).hexdigest()
    return {
        "v": 1,
        "register": register,
        "item": row.label,
        "seq": row.seq,
        "kind": row.kind,
        "from": row.from_name,
        "to": row.to_name,
        "facility": row.facility,
        "statement_sha256": statement,
        "note": row.note,
        "recorded_at": row.recorded_at,
        "prev": prev,
    }


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.add_column("custody", sa.Column("record_digest", sa.String(64), nullable=True))
    register = bind.execute(sa.text("SELECT value FROM register_meta WHERE key = 'register_id'")).scalar_one()
    # The backfill writes into an append-only table: lift the guard for this transaction only.
    if postgres:
        op.execute("ALTER TABLE custody DISABLE TRIGGER custody_append_only")
    else:
        op.execute("DROP TRIGGER custody_append_only_update")
    rows = bind.execute(
        sa.text(
            "SELECT c.id, c.seq, c.kind, c.statement, c.note, c.recorded_at, i.id AS item_id, i.label, "
            "pf.name AS from_name, pt.name AS to_name, f.name AS facility "
            "FROM custody c JOIN items i ON i.id = c.item_id "
            "LEFT JOIN parties pf ON pf.id = c.from_id LEFT JOIN parties pt ON pt.id = c.to_id "
            "LEFT JOIN facilities f ON f.id = c.facility_id ORDER BY c.item_id, c.seq"
        )
    ).all()
    updates, item, prev = [], None, GENESIS
    for row in rows:
        if row.item_id != item:
            item, prev = row.item_id, GENESIS
        prev = hashlib.sha256(canonical_json(_record_v1(register, row, prev))).hexdigest()
        updates.append({"d": prev, "i": row.id})
    stmt = sa.text("UPDATE custody SET record_digest = :d WHERE id = :i")
    for k in range(0, len(updates), _BATCH):
        bind.execute(stmt, updates[k : k + _BATCH])
    if postgres:
        op.execute("ALTER TABLE custody ENABLE TRIGGER custody_append_only")
    else:
        op.execute(
            "CREATE TRIGGER custody_append_only_update BEFORE UPDATE ON custody "
            "BEGIN SELECT RAISE(ABORT, 'custody is append-only: corrections are new records'); END"
        )


def downgrade() -> None:
    raise NotImplementedError("the register is never downgraded: restore a backup instead")
