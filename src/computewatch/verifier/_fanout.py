"""One run's segment replays spread over several executors of that run (the judge's side, issue 24).

The segments wait in one queue in ascending order of their start; every executor takes the next
one when it is free, so each executor still replays its segments in ascending order and never
holds a checkpoint later than the one it starts from (docs/verifier.md, "Executor and judge").
Every executor serves this one run only.

A further executor pays its start-up (Python, torch, the program: seconds) before it helps, so
the first executor starts alone; after its first segment the judge knows what a step costs
here, and starts helpers only when the replay work left is more than twice what an executor's
start took (otherwise they would finish after the first executor had done the work alone). A
helper that is still starting when the queue runs dry is ended unused.
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
    """`work(conv, index, segment)` once per segment, on the first executor `primary` and on up
    to `most_helpers` more: each made by `make()` (no waiting), started by `begin(conv)` (until
    it is ready), its process ended by `kill(conv)` (from another thread too) and its folders
    removed by `stop(conv)`. `steps(segment)` is a segment's size, `startup_s` what starting an
    executor took. `run()` returns, per segment, the exception its work raised (None: none)."""

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
    errors: list[BaseException | None] = field(default_factory=list)
    helpers_started: int = 0

    def __post_init__(self) -> None:
        self._queue: deque[tuple[int, S]] = deque(enumerate(self.segments))
        self._lock = threading.Lock()
        self._done = False
        self._helpers: list[_Helper[C]] = []
        self.errors = [None] * len(self.segments)

    def _next(self, helper: _Helper[C] | None) -> tuple[int, S] | None:
        with self._lock:
            if self._done or not self._queue:
                return None
            if helper is not None:
                helper.busy = True
            return self._queue.popleft()

    def _serve(self, conv: C, helper: _Helper[C] | None) -> None:
        """Take segments until none is left; an executor whose work failed takes no more."""
        while (item := self._next(helper)) is not None:
            index, seg = item
            try:
                self.work(conv, index, seg)
            except BaseException as exc:  # handed back per segment
                self.errors[index] = exc
                return
            finally:
                if helper is not None:
                    helper.busy = False

    def _helper_main(self, helper: _Helper[C]) -> None:
        try:
            with self._lock:
                if self._done:
                    return
                helper.conv = self.make()
            self.begin(helper.conv)
        except BaseException:  # a helper that cannot start only does not help
            return
        self._serve(helper.conv, helper)

    def run(self) -> list[BaseException | None]:
        first = self._next(None)
        if first is None:
            return self.errors
        began = time.monotonic()
        try:
            self.work(self.primary, *first)
        except BaseException as exc:  # handed back per segment
            self.errors[first[0]] = exc
            return self._finish()
        per_step = (time.monotonic() - began) / max(1, self.steps(first[1]))
        left = per_step * sum(self.steps(seg) for _, seg in list(self._queue))
        for _ in range(helpers_worth_starting(left, self.startup_s, min(self.most_helpers, len(self._queue) - 1))):
            helper: _Helper[C] = _Helper()
            helper.thread = threading.Thread(target=self._helper_main, args=(helper,), name="computewatch-replay-helper", daemon=True)
            self._helpers.append(helper)
            helper.thread.start()
        self.helpers_started = len(self._helpers)
        self._serve(self.primary, None)
        return self._finish()

    def _finish(self) -> list[BaseException | None]:
        """No more segments for anyone; helpers still starting or idle are ended now, busy ones
        finish their segment first."""
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
        return self.errors
