"""Migrations on SQLite and PostgreSQL: an empty database and one holding data (at revision
0001) upgrade to head; the head schema is exactly what `registry.schema` describes."""

from __future__ import annotations

import hashlib

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select, text

from computewatch.crypto.canonical import canonical_json
from computewatch.registry import Registry
from computewatch.registry import db as regdb
from computewatch.registry import schema as s
from computewatch.registry.custody import GENESIS, custody_record, record_digest


def test_empty_database_upgrades_to_head_matching_the_schema(db_url) -> None:
    reg = Registry.open(db_url)
    with reg.engine.connect() as conn:
        assert regdb.current_revision(conn) == regdb.head_revision() == "0006_sparse_parent_index"
        diff = compare_metadata(MigrationContext.configure(conn), s.metadata)
    assert diff == [], diff
    again = Registry.open(db_url)  # opening again is a no-op: same register, same id
    assert again.register_id == reg.register_id and len(reg.register_id) == 32
    reg.close()
    again.close()


def test_database_holding_data_at_0001_upgrades_and_keeps_it(db_url) -> None:
    from computewatch.crypto.signing import SigningKey

    engine = regdb.make_engine(db_url)
    regdb.upgrade(engine, "0001")
    maker, owner = SigningKey.from_seed(b"\x01" * 32).public_key, SigningKey.from_seed(b"\x02" * 32).public_key
    t0, t1 = "2026-01-01T00:00:00.000000Z", "2026-01-02T00:00:00.000000Z"
    with engine.begin() as conn:  # what the register held before revision 0002, written as it was then
        register = conn.execute(text("SELECT value FROM register_meta WHERE key = 'register_id'")).scalar_one()
        ids = {}
        for name, role, key in (("maker", "chipmaker", maker), ("acme", "owner", owner)):
            ids[name] = conn.execute(insert(s.parties).values(
                name=name, role=role, public_key=key.raw, keyid=key.keyid, info="{}", created_at=t0,
            )).inserted_primary_key[0]
        item = conn.execute(insert(s.items).values(kind="wafer", label="LOT/W01", holder_id=ids["acme"], custody_seq=1,
                                                   status="active", registered_at=t0)).inserted_primary_key[0]
        conn.execute(
            text("INSERT INTO custody (item_id, seq, kind, from_id, to_id, note, recorded_at) VALUES "
                 "(:i, 0, 'create', NULL, :m, 'made', :t0), (:i, 1, 'transfer', :m, :a, '', :t1)"),
            {"i": item, "m": ids["maker"], "a": ids["acme"], "t0": t0, "t1": t1},
        )
    regdb.upgrade(engine)
    with engine.connect() as conn:
        digests = conn.execute(select(s.custody.c.record_digest).order_by(s.custody.c.seq)).scalars().all()
    engine.dispose()
    # The backfill chained the records exactly as the live code does.
    first = record_digest(custody_record(register=register, label="LOT/W01", seq=0, kind="create", from_name=None,
                                         to_name="maker", facility=None, statement=None, note="made",
                                         recorded_at=t0, prev=GENESIS))
    second = record_digest(custody_record(register=register, label="LOT/W01", seq=1, kind="transfer",
                                          from_name="maker", to_name="acme", facility=None, statement=None, note="",
                                          recorded_at=t1, prev=first))
    assert digests == [first, second]
    assert first == hashlib.sha256(canonical_json({
        "v": 1, "register": register, "item": "LOT/W01", "seq": 0, "kind": "create", "from": None, "to": "maker",
        "facility": None, "statement_sha256": None, "note": "made", "recorded_at": t0, "prev": GENESIS,
    })).hexdigest()
    reg = Registry.open(db_url)
    assert reg.holder("LOT/W01") == "acme" and reg.verify_custody("LOT/W01")["ok"]
    # The upgraded register keeps working: a signed transfer chains onto the backfilled history.
    reg.add_owner("beta", SigningKey.from_seed(b"\x03" * 32).public_key)
    reg.transfer_with_keys("LOT/W01", "beta", SigningKey.from_seed(b"\x02" * 32), SigningKey.from_seed(b"\x03" * 32))
    check = reg.verify_custody("LOT/W01")
    assert check["ok"] and check["records"] == 3
    reg.close()


def test_the_parent_index_is_sparse_and_still_serves_the_children_query(db_url) -> None:
    """Revision 0006: `ix_items_parent_id` leaves out items without a parent (every chip of a
    whole lot) and the register's children query (`parent_id = ?`) still reads through it."""
    reg = Registry.open(db_url)
    query = "SELECT id FROM items WHERE parent_id = 7 AND status = 'active'"
    with reg.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'ix_items_parent_id'")).scalar_one()
            plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + query)))
        else:
            ddl = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_items_parent_id'")).scalar_one()
            conn.execute(text("SET enable_seqscan = off"))  # an empty table: ask whether the index is usable at all
            plan = " ".join(str(r[0]) for r in conn.execute(text("EXPLAIN " + query)))
    reg.close()
    assert "WHERE" in ddl.upper() and "parent_id IS NOT NULL" in ddl.replace("(", "").replace(")", ""), ddl
    assert "ix_items_parent_id" in plan, plan
