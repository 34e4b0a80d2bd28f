"""The Recorder's background writer: encoding, hashing and storing run on one thread, so only the
in-memory copy of a checkpoint sits on the training step's critical path."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from computewatch.formats.storage import StoreError

__all__ = ["BackgroundWriter"]


class BackgroundWriter:
    """Runs storage jobs in order on one daemon thread; the first failure is re-raised to the trainer."""

    def __init__(self, name: str = "computewatch-writer") -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self.busy_s = 0.0  # wall time spent running jobs: what the writer costs the machine at most
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    t0 = time.perf_counter()
                    job()
                    self.busy_s += time.perf_counter() - t0
            except BaseException as exc:  # kept and re-raised on the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        self.raise_if_failed()
        self._queue.put(job)

    def flush(self) -> None:
        """Wait until every submitted job is done."""
        self._queue.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise StoreError(f"transcript writer failed: {self._error}") from self._error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.raise_if_failed()

    def close_quietly(self) -> None:
        """Finish the queued jobs and stop, keeping any failure to itself (the caller is already failing)."""
        self._queue.put(None)
        self._thread.join()
