"""The snapshot trigger: the current epoch's committed schedule, consumed as busy time passes."""

from __future__ import annotations

from collections.abc import Iterator

from computewatch.formats.schedule import commitment, epoch_seed, iter_arrivals

__all__ = ["EpochSchedule"]


class EpochSchedule:
    """One epoch of Poisson arrivals in busy time; only firmware holds the seed until the reveal."""

    def __init__(self, schedule_key: bytes, epoch: int, start_busy_ns: int, rate_per_day: float) -> None:
        self.epoch = epoch
        self.start_busy_ns = start_busy_ns
        self.rate_per_day = rate_per_day
        self._seed = epoch_seed(schedule_key, epoch)
        self._arrivals: Iterator[int] = iter_arrivals(self._seed, rate_per_day, start_busy_ns)
        self._next: int | None = next(self._arrivals, None)

    @property
    def commitment(self) -> bytes:
        return commitment(self._seed)

    def reveal(self) -> bytes:
        """The seed, for the reveal entry (after which this schedule must not be used again)."""
        return self._seed

    def fire_until(self, busy_ns: int) -> list[int]:
        """Pop every arrival at or before `busy_ns` (the triggers inside the step just ended)."""
        fired: list[int] = []
        while self._next is not None and self._next <= busy_ns:
            fired.append(self._next)
            self._next = next(self._arrivals, None)
        return fired
