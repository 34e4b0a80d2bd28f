"""Group commit: entries from many chips share one database transaction (one fsync), and each
waiting request is answered only after the transaction holding its entry has committed.

One writer thread takes every row queued so far, inserts them in one transaction and commits;
if that transaction fails, it retries the rows one by one so that only a bad row fails. A
request blocks in `store` until its row is committed (or raises its error)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from computewatch.registry import db as reg_db

__all__ = ["GroupCommitter"]


@dataclass
class _Pending:
    write: Callable[[Connection], Any]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommitter:
    def __init__(self, engine: Engine, max_batch: int = 512) -> None:
        self._engine = engine
        self._max = max_batch
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="computewatch-group-commit", daemon=True)
        self._thread.start()
        self.batches = 0
        self.rows = 0

    def store(self, write: Callable[[Connection], Any]) -> None:
        """Run `write(conn)` inside a committed transaction; returns once it is durable."""
        p = _Pending(write)
        with self._cond:
            if self._closed:
                raise RuntimeError("the service is shutting down")
            self._queue.append(p)
            self._cond.notify()
        p.done.wait()
        if p.error is not None:
            raise p.error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with reg_db.write(self._engine) as conn:
                for p in batch:
                    p.write(conn)
            self.batches += 1
            self.rows += len(batch)
        except BaseException:  # noqa: BLE001
            if len(batch) == 1:
                self._single(batch[0])
            else:
                for p in batch:  # find the bad row: each in its own transaction
                    self._single(p)
            return
        for p in batch:
            p.done.set()

    def _single(self, p: _Pending) -> None:
        try:
            with reg_db.write(self._engine) as conn:
                p.write(conn)
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting request)
            p.error = exc
        p.done.set()
