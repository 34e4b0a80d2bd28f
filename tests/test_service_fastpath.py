"""The chip-entry fast path's shortcuts agree with the careful code they stand in for: the ack
built without a JSON encode, the counter read without a parse, the bounded-wait group commit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from computewatch.crypto.canonical import canonical_json_v2
from computewatch.formats.chip_entry import expected_ack
from computewatch.registry import Registry
from computewatch.registry import db as reg_db
from computewatch.service import db as service_db
from computewatch.service import schema as ss
from computewatch.service.commit import GroupCommitter
from computewatch.service.logs import _Chip, _routing_counter


def _line(counter: int, body: dict[str, object], serial: str = "CW-0001") -> bytes:
    return canonical_json_v2({"v": 2, "serial": serial, "counter": counter, "boot": 0, "kind": "snapshot",
                              "clock_ns": "5", "busy_ns": "7", "prev": "ab" * 32, "body": body})


@pytest.mark.parametrize("serial", ["CW-0001", 'odd "serial"\\', "puce-\u00e9\u4e2d"])
@pytest.mark.parametrize("counter", [0, 7, 2**53 - 1])
def test_chip_ack_is_expected_ack(serial: str, counter: int) -> None:
    line = _line(counter, {}, serial)
    import hashlib

    from computewatch.crypto.canonical import canonical_json

    chip = _Chip(None, ack_tail=canonical_json({"serial": serial, "v": 1})[1:])  # type: ignore[arg-type]
    assert chip.ack(counter, hashlib.sha256(line).hexdigest()) == expected_ack(serial, counter, line)


def test_routing_counter_reads_the_top_level_counter() -> None:
    for counter in (0, 1, 12, 2**40):
        assert _routing_counter(_line(counter, {})) == counter
        # A body may hold a "counter" key of its own: it sorts before the top-level one.
        assert _routing_counter(_line(counter, {"counter": 99, "x": {"counter": 5}})) == counter
    assert _routing_counter(b"not an entry") is None
    assert _routing_counter(b'{"body":{},"counter":01,"v":2}') is None  # not canonical: the parse decides
    assert _routing_counter(b'{"body":{},"counter":-1,"v":2}') is None
    assert _routing_counter(b'{"body":{},"counter":' + b"9" * 30 + b',"v":2}') is None


def _committer(tmp_path: Path, wait: float) -> tuple[Registry, GroupCommitter]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    service_db.upgrade(reg.engine)
    return reg, GroupCommitter(reg.engine, max_wait_s=wait)


def _row(serial: str, counter: int) -> dict[str, object]:
    return {"serial": serial, "counter": counter, "line": b"x", "entry_sha256": "0" * 64, "received_at": "2026-01-01T00:00:00Z"}


def test_group_commit_gathers_under_load_and_not_for_a_lone_row(tmp_path: Path) -> None:
    """After a batch of several rows the writer waits (bounded) for more before committing, so
    rows arriving over that time share one transaction; a lone row after an idle spell is
    committed without that wait. Every row is stored either way."""
    reg, gc = _committer(tmp_path, wait=60.0)
    try:
        lone = threading.Thread(target=gc.insert, args=(ss.log_entries, _row("L", 0)))
        lone.start()
        lone.join(timeout=30)  # well under the 60 s wait: a lone row does not wait for company
        assert not lone.is_alive()
        gc._max_wait = 1.0
        gc._loaded = True  # as after a batch of several rows
        start = gc.batches
        threads = [threading.Thread(target=gc.insert, args=(ss.log_entries, _row("B", i))) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert gc.batches - start <= 6  # 24 rows in a few transactions, not one each
        with reg_db.read(reg.engine) as conn:
            from sqlalchemy import func, select

            assert conn.execute(select(func.count()).select_from(ss.log_entries)).scalar_one() == 25
    finally:
        gc.close()
        reg.close()


def test_group_commit_on_postgresql_sends_a_batch_as_one_statement(postgres_url: str) -> None:
    """PostgreSQL: a gathered batch of inserted rows goes to the server as one INSERT in
    autocommit (its own transaction; no BEGIN, no COMMIT round trip), every row durable before
    its waiter returns; a batch holding a duplicate key still fails only that request (the
    rows are retried one by one in transactions); a batch with a `store` write keeps the
    explicit transaction."""
    from sqlalchemy import event, func, insert, select
    from sqlalchemy.exc import IntegrityError

    reg = Registry.open(postgres_url)
    service_db.upgrade(reg.engine)
    gc = GroupCommitter(reg.engine, max_wait_s=0.5)
    one: list[tuple[int, bool | None]] = []  # (batch size, sent as one statement; None: that statement failed)
    plain = gc._as_one_statement

    def spy(batch: list[Any]) -> bool:
        try:
            sent = plain(batch)
        except BaseException:
            one.append((len(batch), None))
            raise
        one.append((len(batch), sent))
        return sent

    gc._as_one_statement = spy  # type: ignore[method-assign]
    begins: list[bool] = []  # per INSERT: inside a transaction block (the driver not in autocommit)

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT"):
            begins.append(not conn.connection.dbapi_connection.autocommit)

    event.listen(reg.engine, "before_cursor_execute", executed)
    errors: list[BaseException] = []

    def put(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except IntegrityError as exc:
            errors.append(exc)

    try:
        gc.insert(ss.log_entries, _row("A", 0))
        assert one == [(1, True)] and begins == [False]  # no transaction block for it
        gc._loaded = True  # as after a batch of several rows: the writer gathers for 0.5 s
        threads = [threading.Thread(target=put, args=(gc.insert, ss.log_entries, _row("B", i))) for i in range(12)]
        threads.append(threading.Thread(target=put, args=(gc.insert_many, ss.log_entries, [_row("C", 0), _row("A", 0)])))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 1  # only the request holding the duplicate failed, all of it
        assert any(n > 1 and sent is None for n, sent in one)  # its batch failed as one statement, then row by row
        gc.store(lambda c: c.execute(insert(ss.log_entries).values(**_row("D", 0))))
        assert one[-1] == (1, False) and begins[-1]  # a write callable: an explicit transaction
        with reg_db.read(reg.engine) as conn:
            keys = set(conn.execute(select(ss.log_entries.c.serial, ss.log_entries.c.counter)).all())
            assert conn.execute(select(func.count()).select_from(ss.log_entries)).scalar_one() == 14
        assert keys == {("A", 0), ("D", 0)} | {("B", i) for i in range(12)}  # nothing of C: all or none
        begins.clear()
        gc._loaded = True
        threads = [threading.Thread(target=gc.insert, args=(ss.log_entries, _row("E", i))) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert any(n > 1 and sent for n, sent in one[-8:]) and not any(begins)  # a batch of several, one statement
    finally:
        gc.close()
        reg.close()


def test_freeze_heap_takes_the_start_up_heap_out_of_the_collector() -> None:
    """A server process freezes its heap once started: a full collection then walks only what
    came after (the collector's pause no longer grows with every imported package)."""
    import gc

    from computewatch.service.serving import freeze_heap

    before = len(gc.get_objects())
    try:
        freeze_heap()
        assert gc.get_freeze_count() >= before // 2
        assert len(gc.get_objects()) < before // 2
    finally:
        gc.unfreeze()


def test_batches_ending_in_a_checkpoint_are_stored_whole_or_not_at_all(tmp_path: Path) -> None:
    """Chip log v2 batches (`POST /v1/chips/{serial}/batches`): each genuine batch is stored and
    acked with its checkpoint's ack; a resend is acked as a duplicate; a batch out of order or
    overlapping the copy with other bytes is 409; every forged batch (an entry the chip never
    wrote, behind the chip's genuine checkpoint) is refused and stores nothing; the copy equals
    the chip's log. The per-entry route agrees with it (a batch's entry resent alone is a duplicate)."""
    import hashlib

    from computewatch.adversary.service_attacks import batch_chip_world, forged_batches, post_batch
    from computewatch.service.bodies import BATCH_TYPE, ENTRY_TYPE

    app, client, serial, batches = batch_chip_world(tmp_path, steps=6)
    assert len(batches) >= 3 and all(len(b) >= 2 for b in batches[:2])
    logs = app.state.service.logs

    def post(lines: list[bytes]) -> Any:
        return post_batch(client, serial, lines)

    with client:
        r = post(batches[1])
        assert r.status_code == 409 and "before entry 0" in r.json()["error"]
        r = post(batches[0])
        last = batches[0][-1]
        assert r.status_code == 200 and r.headers["x-cw-duplicate"] == "0"
        assert r.content == expected_ack(serial, len(batches[0]) - 1, last)
        assert r.json()["entry_sha256"] == hashlib.sha256(last).hexdigest()
        for what, lines in forged_batches(batches[1]):
            r = post(lines)
            assert r.status_code in (401, 422), (what, r.status_code, r.text)
            assert logs.count(serial) == len(batches[0]), what
        r = post(batches[0])
        assert r.status_code == 200 and r.headers["x-cw-duplicate"] == "1"
        r = post([batches[0][-1], *batches[1]])  # overlaps the copy: its first line is stored
        assert r.status_code == 409 and "overlaps" in r.json()["error"]
        r = client.post(f"/v1/chips/{serial}/batches", content=b"", headers={"content-type": BATCH_TYPE})
        assert r.status_code == 422
        r = client.post(f"/v1/chips/{serial}/batches", content=batches[1][0], headers={"content-type": BATCH_TYPE})
        assert r.status_code == 422 and "newline" in r.json()["error"]
        for b in batches[1:]:
            if logs.count(serial) < sum(len(x) for x in batches[: batches.index(b) + 1]):
                assert post(b).status_code == 200
        r = client.post(f"/v1/chips/{serial}/entries", content=batches[1][0], headers={"content-type": ENTRY_TYPE})
        assert r.status_code == 200 and r.headers["x-cw-duplicate"] == "1"
        stored = logs.lines(serial, 0, 1000)
    assert stored == [line for b in batches for line in b]


def test_two_log_copies_take_one_chips_batches(tmp_path: Path) -> None:
    """Two server processes' log copies (two `ChipLogs` over one database) take one chip's
    batches in turn: each catches up from the database first, the same batch offered to the
    other after it was stored is acked as a duplicate, and a batch that starts past the stored
    copy is refused as out of order."""
    from computewatch.adversary.service_attacks import batch_chip_world
    from computewatch.service.errors import ServiceError
    from computewatch.service.logs import ChipLogs

    app, _client, serial, batches = batch_chip_world(tmp_path, steps=6)
    engine = app.state.service.reg.engine
    a, b = ChipLogs(engine, GroupCommitter(engine)), ChipLogs(engine, GroupCommitter(engine))
    try:
        assert not a.append_batch(serial, batches[0]).duplicate
        assert not b.append_batch(serial, batches[1]).duplicate  # b loads batch 0 from the database
        assert a.append_batch(serial, batches[1]).duplicate  # a catches up: batch 1 is stored, same bytes
        with pytest.raises(ServiceError) as exc:
            a.append_batch(serial, batches[2][1:])  # starts one past the copy's end
        assert exc.value.status in (409, 422)
        ack = b.append_batch(serial, batches[2])
        assert ack.counter == sum(map(len, batches[:3])) - 1
        assert a.lines(serial, 0, 1000) == [line for x in batches[:3] for line in x]
        assert a.tree(serial)[0].root() == b.tree(serial)[0].root()
    finally:
        a.close()
        b.close()
        app.state.service.logs.close()
