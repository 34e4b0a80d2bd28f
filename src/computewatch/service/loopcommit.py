"""Group commit on the event loop (PostgreSQL): the rows that coroutines wait on are written by
a task of their own event loop through psycopg's asynchronous connection, so no writer thread
hands each round trip back and forth with the loop.

Measured with the writer thread (issue 24, 2 server processes, 3,000 entries/s offered): each
request crossed two more threads than it needs (loop -> writer thread -> loop), and every
wake-up of the writer had to take the GIL from a loop busy checking other batches; on shared
cores each crossing is a scheduling delay in the tail. Here the loop sends the INSERT, goes on
serving requests while PostgreSQL commits, and resolves the waiting requests itself.

Same rules as the writer thread (`GroupCommitter`): rows queued while a statement runs form the
next batch; under load the task waits `max_wait_s` to gather more; a batch that is one
multi-row INSERT runs alone in autocommit (its own transaction: all rows or none, durable when
it returns, synchronous commit), a larger or mixed one in one transaction; a failed batch is
retried row group by row group so that only the bad one fails; a request is answered only after
its rows are durable. The fault points of the writer thread are kept, called in a thread only
when a test installed handlers (a handler that holds or pauses must not stop the loop, whose
requests would then not join the held batch)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError

from computewatch import _faults

if TYPE_CHECKING:
    from computewatch.service.commit import _Pending

__all__ = ["LoopWriter"]


class LoopWriter:
    """The group commit of one event loop's coroutines (create and use it on that loop)."""

    def __init__(self, engine: Engine, max_batch: int, max_wait_s: float) -> None:
        self._engine = engine
        self._max = max_batch
        self._max_wait = max_wait_s
        self._queue: list[_Pending] = []
        self._inflight: list[_Pending] = []  # the batch being written
        self._wake = asyncio.Event()
        self._closed = False
        self._loaded = False  # the previous batch held more than one row: gather before the next
        self._conn: Any = None  # psycopg.AsyncConnection, opened on first use and after a failure
        self.batches = 0
        self.rows = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="computewatch-group-commit")

    def enqueue(self, p: _Pending) -> None:
        self._queue.append(p)
        self._wake.set()

    def close(self) -> None:
        """Commit what is queued, then stop (call on the writer's loop)."""
        self._closed = True
        self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        return
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                if self._loaded and len(self._queue) < self._max and not self._closed:
                    await asyncio.sleep(self._max_wait)  # under load: let the next rows join this statement
                await _fault("service.group-commit")
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                self._loaded = len(batch) > 1
                self._inflight = batch
                await self._commit(batch)
                self._inflight = []
        finally:
            # Cancelled (the loop is stopping): whatever is unsettled is answered with an error,
            # never an ack, and its `settled` runs (a chip's lock is released).
            for p in self._inflight + self._queue:
                p.error = RuntimeError("the service is shutting down")
                _settle(p)
            self._inflight, self._queue = [], []
            await self._disconnect()

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await self._write(batch)
            self.batches += 1
            self.rows += len(batch)
        except Exception:
            for p in batch:  # find the bad rows: each request's rows alone
                try:
                    await self._write([p])
                except Exception as exc:
                    p.error = exc
        for p in batch:
            _settle(p)

    async def _write(self, batch: list[_Pending]) -> None:
        """The batch's rows durable in PostgreSQL (one autocommit statement where they fit one),
        or an exception (SQLAlchemy's class for it) with nothing of the batch stored."""
        from computewatch.service.commit import insert_statements

        by_table: dict[Table, list[dict[str, Any]]] = {}
        for p in batch:
            assert p.table is not None and p.rows is not None
            by_table.setdefault(p.table, []).extend(p.rows)
        statements = []
        for table, values in by_table.items():
            if any(list(v) != list(values[0]) for v in values):
                raise ValueError("rows of one batch differ in their columns")
            statements += insert_statements(self._engine.dialect, table, values)
        conn = None
        try:
            conn = await self._connect()
            if len(statements) == 1:
                # One statement outside a transaction block is its own transaction: one round trip.
                await _pause_in_batch(batch)  # nothing of the batch is durable yet
                await conn.execute(*statements[0])
            else:
                async with conn.transaction():
                    for sql, params in statements:
                        await conn.execute(sql, params)
                    await _pause_in_batch(batch)
        except Exception as exc:
            import psycopg

            if conn is not None and (conn.closed or conn.broken):
                self._conn = None
            if isinstance(exc, psycopg.Error):
                raise DBAPIError.instance(statements[0][0], None, exc, psycopg.Error) from exc
            raise

    async def _connect(self) -> Any:
        if self._conn is None:
            import psycopg

            _args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            self._conn = await psycopg.AsyncConnection.connect(**kwargs, autocommit=True)
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _settle(p: _Pending) -> None:
    p.finish()
    if p.woken is not None and not p.woken.done():
        p.woken.set_result(None)


async def _pause_in_batch(batch: list[_Pending]) -> None:
    """The writer thread's fault point for a batch, written or about to be, nothing of it
    committed (`commit._pause_in_batch`, called off the loop and only under a test's handlers)."""
    if _faults.current():
        from computewatch.service.commit import _pause_in_batch as pause

        await asyncio.to_thread(pause, batch)


async def _fault(point: str, **info: Any) -> None:
    """`fault_point` off the loop, and only when a test installed handlers (none in service)."""
    if _faults.current():
        await asyncio.to_thread(_faults.fault_point, point, **info)
