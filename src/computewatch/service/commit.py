"""Group commit: entries from many chips share one database transaction (one fsync), and each
waiting request is answered only after the transaction holding its entry has committed.

One writer thread takes every row queued so far (up to `max_batch`: the rows that arrived while
the previous transaction was committing), inserts them in one transaction (one multi-row insert
per table) and commits; if that transaction fails, it retries the rows one by one so that only a
bad row fails. A request blocks in `insert` or `store` until its row is committed (or raises
its error). Bounded wait: while a fleet is reporting (the previous batch held more than one
row), the writer waits `max_wait_s` after a batch's first row before it takes the batch, so
one commit (its fsync and its fixed cost in CPU) serves more rows; a lone chip's entry is
committed at once. Coroutines waiting on one batch are woken with one call into their event
loop, not one each. On PostgreSQL a batch that is one multi-row INSERT (rows of one table, one
shape, within one statement's parameters: the common case) is sent as that statement alone in
autocommit, its own transaction: one round trip to the server instead of three (BEGIN, INSERT,
COMMIT), each of which waits for the writer thread to be scheduled and retake the GIL. On
PostgreSQL through psycopg the rows coroutines await skip the writer thread altogether: each
event loop's own writer task commits them (`loopcommit.LoopWriter`, same rules). docs/service.md,
Group commit, gives the durability argument."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Table, insert

from computewatch.registry import db as reg_db
from computewatch._faults import fault_point
from computewatch.service.loopcommit import LoopWriter

__all__ = ["GroupCommitter"]


@dataclass
class _Pending:
    write: Callable[[Connection], Any] | None  # None: insert `row` into `table`
    label: str = ""
    table: Table | None = None
    rows: list[dict[str, Any]] | None = None
    done: threading.Event | None = None  # a blocked thread's wake-up (None: a coroutine's row)
    error: BaseException | None = None
    settled: Callable[[BaseException | None], None] | None = None  # called in the writer thread once settled
    woken: asyncio.Future[None] | None = None  # a coroutine's wake-up, resolved on its loop

    def finish(self) -> None:
        if self.settled is not None:
            self.settled(self.error)
        if self.done is not None:
            self.done.set()


class GroupCommitter:
    def __init__(self, engine: Engine, max_batch: int = 512, max_wait_s: float = 0.005) -> None:
        self._engine = engine
        self._max = max_batch
        self._max_wait = max_wait_s
        # PostgreSQL: a batch that is one INSERT statement runs alone in autocommit (`_as_one_statement`).
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT") if engine.dialect.name == "postgresql" else None
        # PostgreSQL through psycopg: coroutines' rows are written by a task of their own event
        # loop (`loopcommit.LoopWriter`: no thread hand-off per round trip); other rows here.
        self._on_loop = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self._loop_writers: dict[asyncio.AbstractEventLoop, LoopWriter] = {}
        self._loaded = False  # the previous batch held more than one row: gather before the next
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="computewatch-group-commit", daemon=True)
        self._thread.start()
        self._batches = 0
        self.rows = 0

    def store(self, write: Callable[[Connection], Any], label: str = "") -> None:
        """Run `write(conn)` inside a committed transaction; returns once it is durable.
        `label` names the row in the test hook's record of a held batch."""
        self._wait(_Pending(write, label, done=threading.Event()))

    def insert(self, table: Table, row: dict[str, Any], label: str = "") -> None:
        """Insert `row` into `table` in a committed transaction; returns once it is durable. The
        rows of one batch go to the database as one multi-row insert per table."""
        self._wait(_Pending(None, label, table, [row], done=threading.Event()))

    def insert_many(self, table: Table, rows: list[dict[str, Any]], label: str = "") -> None:
        """Insert all of `rows` into `table` in one committed transaction (all or none: a failure
        fails them together); returns once they are durable."""
        self._wait(_Pending(None, label, table, list(rows), done=threading.Event()))

    async def insert_async(self, table: Table, row: dict[str, Any], label: str = "",
                           settled: Callable[[BaseException | None], None] | None = None) -> None:
        """`insert` for a coroutine: no thread waits, the event loop is woken once the row is
        committed. `settled(error)` runs in the writer thread right after the commit (or its
        failure), before the coroutine resumes, and runs even if the coroutine is cancelled: a
        caller holding a per-chip lock releases it there, never before the row's fate is known."""
        await self.insert_many_async(table, [row], label, settled)

    async def insert_many_async(self, table: Table, rows: list[dict[str, Any]], label: str = "",
                                settled: Callable[[BaseException | None], None] | None = None) -> None:
        """`insert_async` of several rows, all in one transaction (all or none)."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        p = _Pending(None, label, table, list(rows), settled=settled, woken=woken)
        if self._on_loop:
            self._loop_writer(loop, settled).enqueue(p)
        else:
            self._enqueue(p, settled)
        await asyncio.shield(woken)
        if p.error is not None:
            raise p.error

    def _loop_writer(self, loop: asyncio.AbstractEventLoop, settled: Callable[[BaseException | None], None] | None) -> LoopWriter:
        with self._cond:
            self._refuse_if_closed(settled)
            writer = self._loop_writers.get(loop)
            if writer is None:
                writer = self._loop_writers[loop] = LoopWriter(self._engine, self._max, self._max_wait)
            return writer

    def _enqueue(self, p: _Pending, settled: Callable[[BaseException | None], None] | None = None) -> None:
        with self._cond:
            self._refuse_if_closed(settled)
            self._queue.append(p)
            self._cond.notify()

    def _refuse_if_closed(self, settled: Callable[[BaseException | None], None] | None) -> None:
        if self._closed:
            exc = RuntimeError("the service is shutting down")
            if settled is not None:
                settled(exc)
            raise exc

    def _wait(self, p: _Pending) -> None:
        self._enqueue(p)
        assert p.done is not None
        p.done.wait()
        if p.error is not None:
            raise p.error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            writers = list(self._loop_writers.items())
        for loop, writer in writers:  # each commits what its loop queued, then stops
            with contextlib.suppress(RuntimeError):  # a closed loop: its writer is gone with it
                loop.call_soon_threadsafe(writer.close)
        self._thread.join(timeout=30)

    @property
    def batches(self) -> int:
        """Batches committed (by the writer thread and the event loops' writers)."""
        return self._batches + sum(w.batches for w in list(self._loop_writers.values()))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                gather = self._loaded and len(self._queue) < self._max and not self._closed
            if gather:
                # Under load: let the rows of the next few milliseconds join this transaction.
                # Enqueuers meanwhile find no waiter to notify (cheap); the wait is bounded.
                time.sleep(self._max_wait)
            fault_point("service.group-commit")  # a crash test holds the writer here so a batch forms
            with self._cond:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            self._loaded = len(batch) > 1
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            if not self._as_one_statement(batch):
                with reg_db.write(self._engine) as conn:
                    _apply(conn, batch)
                    _pause_in_batch(batch)
            self._batches += 1
            self.rows += len(batch)
        except BaseException:
            if len(batch) == 1:
                self._single(batch[0])
            else:
                for p in batch:  # find the bad row: each in its own transaction
                    self._single(p)
            _wake(batch)
            return
        for p in batch:
            p.finish()
        _wake(batch)

    def _as_one_statement(self, batch: list[_Pending]) -> bool:
        """PostgreSQL: insert the batch as one INSERT statement in autocommit, if it is one (every
        row for one table, of one shape, within one statement's parameters). A statement outside
        a transaction block is its own transaction: all of its rows or none, and durable when it
        returns (synchronous commit, as COMMIT is), so the waiting requests are still answered
        only after their rows are durable. False: the batch is not one statement; nothing done."""
        table = batch[0].table
        if self._autocommit is None or table is None or any(p.write is not None or p.table is not table for p in batch):
            return False
        values = [row for p in batch for row in p.rows or ()]
        cols = list(values[0]) if values else []
        if not values or len(values) * len(cols) > _max_params(self._engine.dialect.name) or any(list(v) != cols for v in values):
            return False
        _pause_in_batch(batch)  # the crash test's point: nothing of the batch is durable yet
        with self._autocommit.connect() as conn:
            _insert_rows(conn, table, values)
        return True

    def _single(self, p: _Pending) -> None:
        try:
            with reg_db.write(self._engine) as conn:
                _apply(conn, [p])
        except BaseException as exc:
            p.error = exc
        p.finish()


def _wake(batch: list[_Pending]) -> None:
    """Resolve the coroutines' futures of a settled batch: one call into each event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for p in batch:
        if p.woken is not None:
            by_loop.setdefault(p.woken.get_loop(), []).append(p.woken)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop (shutting down): nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for woken in futures:
        if not woken.done():
            woken.set_result(None)


def _apply(conn: Connection, batch: list[_Pending]) -> None:
    rows: dict[Table, list[dict[str, Any]]] = {}
    for p in batch:
        if p.write is not None:
            p.write(conn)
        else:
            assert p.table is not None and p.rows is not None
            rows.setdefault(p.table, []).extend(p.rows)
    for table, values in rows.items():
        _insert_rows(conn, table, values)


_MAX_PARAMS = 999  # the smallest host-parameter limit of any SQLite build
# PostgreSQL's wire protocol counts a statement's parameters in 16 bits: a batch of a few hundred
# rows is still one statement (at 999 a busy batch of 200 or more rows took three round trips and
# a transaction, 57 ms where the one statement takes a few).
_MAX_PARAMS_POSTGRESQL = 65535


def _max_params(dialect: str) -> int:
    return _MAX_PARAMS_POSTGRESQL if dialect == "postgresql" else _MAX_PARAMS


def _insert_rows(conn: Connection, table: Table, values: list[dict[str, Any]]) -> None:
    """The rows as INSERT statements with a VALUES list of many rows each. Not executemany: the
    drivers step it row by row, and the writer thread then gives up and retakes the GIL once per
    row; while the event loop's thread checks entries each retake can wait a whole switch
    interval (a convoy). Rows of different shapes go the plain way."""
    if any(list(v) != list(values[0]) for v in values):
        conn.execute(insert(table), values)
        return
    for sql, params in insert_statements(conn.dialect, table, values):
        conn.exec_driver_sql(sql, params)


def insert_statements(dialect: Dialect, table: Table, values: list[dict[str, Any]]) -> list[tuple[str, tuple[Any, ...]]]:
    """Rows of one shape as the driver's INSERT statements and their parameters, as many rows to
    a statement as its parameter limit allows. Each value goes through its column type's bind
    processing, as SQLAlchemy's own insert does."""
    cols = list(values[0])
    procs = [table.c[c].type.bind_processor(dialect) for c in cols]
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    prep = dialect.identifier_preparer
    head = f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(c) for c in cols)}) VALUES "
    group = "(" + ", ".join([mark] * len(cols)) + ")"
    per = max(1, _max_params(dialect.name) // len(cols))
    out = []
    for k in range(0, len(values), per):
        chunk = values[k : k + per]
        params = tuple(v[c] if f is None else f(v[c]) for v in chunk for c, f in zip(cols, procs, strict=True))
        out.append((head + ", ".join([group] * len(chunk)), params))
    return out


def _pause_in_batch(batch: list[_Pending]) -> None:
    """Fault point `registry.transaction` named `service-batch`: a batch of two or more rows,
    written and not yet committed (the crash test records the labels and kills it there)."""
    if len(batch) >= 2:
        fault_point("registry.transaction", name="service-batch", labels=[p.label for p in batch])
