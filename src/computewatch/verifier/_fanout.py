"""One run's segment replays spread over several executors of that run (the judge's side, issue 24).

The segments wait in one queue in ascending order of their start; every executor takes the next
one when it is free, so each executor still replays its segments in ascending order and never
holds a checkpoint later than the one it starts from (docs/verifier.md, "Executor and judge").
Every executor serves this one run only.

Helpers already started (`ready`: warm executors that imported torch while the judge staged the
run) take segments from the start. A further executor that must still start pays its start-up
(Python, torch, the program: seconds) before it helps, so after the first executor's first
segment the judge knows what a step costs here, and starts such helpers only when the replay
work left is more than twice what an executor's start took (otherwise they would finish after
the first executor had done the work alone). A helper that is still starting when the queue runs
dry is ended unused.

After the last segment has been handed out, the executors take the run's `tail` jobs (the
forward-only loss evaluations, which need later checkpoints) from a second queue: an executor
reaches it only when no segment is left for anyone, so it never replays after it saw a later
checkpoint either.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Spread", "helpers_worth_starting"]

C = TypeVar("C")  # an executor conversation
S = TypeVar("S")  # a segment


def helpers_worth_starting(seconds_left: float, startup_s: float, most: int) -> int:
    """Helpers to start when the first executor alone has `seconds_left` of replay to do and an
    executor takes `startup_s` to start: all it may have (`most`) when the work left exceeds
    twice the start-up, else none."""
    return most if most > 0 and seconds_left > 2 * startup_s else 0


@dataclass
class _Helper(Generic[C]):
    conv: C | None = None
    busy: bool = False
    thread: threading.Thread | None = None


@dataclass
class Spread(Generic[C, S]):
    """`work(conv, index, segment)` once per segment, on the first executor `primary`, on the
    started helpers `ready` and on up to `most_helpers - len(ready)` more: each made by `make()`
    (no waiting); every helper started by `begin(conv)` (until it is ready), its process ended by
    `kill(conv)` (from another thread too) and its folders removed by `stop(conv)`.
    `steps(segment)` is a segment's size, `startup_s` what starting an executor took. Then
    `tail_work(conv, j)` once for each j < `tail`. `run()` returns, per segment, the exception
    its work raised (None: none); `tail_errors` holds the tail's, `tail_ran` which tail jobs ran
    (one that did not: an executor failed before it, and its error is in `errors` or
    `tail_errors`)."""

    segments: Sequence[S]
    primary: C
    work: Callable[[C, int, S], None]
    make: Callable[[], C]
    begin: Callable[[C], None]
    kill: Callable[[C], None]
    stop: Callable[[C], None]
    steps: Callable[[S], int]
    startup_s: float
    most_helpers: int
    ready: Sequence[C] = ()
    tail: int = 0
    tail_work: Callable[[C, int], None] | None = None
    errors: list[BaseException | None] = field(default_factory=list)
    tail_errors: list[BaseException | None] = field(default_factory=list)
    tail_ran: list[bool] = field(default_factory=list)
    helpers_started: int = 0  # helpers that replayed or evaluated at least one job

    def __post_init__(self) -> None:
        self._queue: deque[tuple[int, S]] = deque(enumerate(self.segments))
        self._tail: deque[int] = deque(range(self.tail))
        self._lock = threading.Lock()
        self._done = False
        self._helpers: list[_Helper[C]] = []
        self._worked: set[int] = set()  # ids of helpers that took a job
        self.errors = [None] * len(self.segments)
        self.tail_errors = [None] * self.tail
        self.tail_ran = [False] * self.tail

    def _next(self, helper: _Helper[C] | None) -> tuple[int, S] | int | None:
        """The next segment, else the next tail job (an index), else None."""
        with self._lock:
            if self._done:
                return None
            item: tuple[int, S] | int
            if self._queue:
                item = self._queue.popleft()
            elif self._tail:
                item = self._tail.popleft()
            else:
                return None
            if helper is not None:
                helper.busy = True
                self._worked.add(id(helper))
            return item

    def _serve(self, conv: C, helper: _Helper[C] | None) -> None:
        """Take jobs until none is left; an executor whose work failed takes no more."""
        while (item := self._next(helper)) is not None:
            try:
                self._one(conv, item)
            except BaseException:  # recorded per job by _one
                return
            finally:
                if helper is not None:
                    helper.busy = False

    def _one(self, conv: C, item: tuple[int, S] | int) -> None:
        try:
            if isinstance(item, tuple):
                self.work(conv, *item)
            else:
                assert self.tail_work is not None
                self.tail_ran[item] = True
                self.tail_work(conv, item)
        except BaseException as exc:  # handed back per job
            if isinstance(item, tuple):
                self.errors[item[0]] = exc
            else:
                self.tail_errors[item] = exc
            raise

    def _helper_main(self, helper: _Helper[C], started: C | None) -> None:
        try:
            with self._lock:
                if self._done:
                    return
                helper.conv = started if started is not None else self.make()
            self.begin(helper.conv)
        except BaseException:  # a helper that cannot start only does not help
            return
        self._serve(helper.conv, helper)

    def _add(self, started: C | None) -> None:
        helper: _Helper[C] = _Helper()
        helper.thread = threading.Thread(target=self._helper_main, args=(helper, started), name="computewatch-replay-helper", daemon=True)
        self._helpers.append(helper)
        helper.thread.start()

    def run(self) -> list[BaseException | None]:
        for conv in self.ready:  # already started: they help from the first segment on
            self._add(conv)
        first = self._next(None)
        if first is None:
            return self._finish()
        began = time.monotonic()
        try:
            self._one(self.primary, first)
        except BaseException:  # recorded per job
            return self._finish()
        if isinstance(first, tuple):
            per_step = (time.monotonic() - began) / max(1, self.steps(first[1]))
            with self._lock:
                waiting = list(self._queue)
            left = per_step * sum(self.steps(seg) for _, seg in waiting) / (1 + len(self.ready))
            cold = min(self.most_helpers - len(self.ready), len(waiting) - 1 - len(self.ready))
            for _ in range(helpers_worth_starting(left, self.startup_s, cold)):
                self._add(None)
        self._serve(self.primary, None)
        return self._finish()

    def _finish(self) -> list[BaseException | None]:
        """No more jobs for anyone; helpers still starting or idle are ended now, busy ones
        finish their job first."""
        with self._lock:
            self._done = True
            idle = [h for h in self._helpers if not h.busy]
        for helper in idle:
            if helper.conv is not None:
                self.kill(helper.conv)
        for helper in self._helpers:
            assert helper.thread is not None
            helper.thread.join()
            if helper.conv is not None:
                self.stop(helper.conv)
        self.helpers_started = sum(1 for h in self._helpers if id(h) in self._worked)
        return self.errors
