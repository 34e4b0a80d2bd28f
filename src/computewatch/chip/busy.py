"""Busy time the chip measures on its own secure clock, never a number the owner supplies.

The snapshot trigger runs in busy time (Poisson arrivals per busy day), so whoever sets busy
time sets how often a chip can be caught: an owner that reports 0 busy seconds per step trains
without a single snapshot. The chip therefore meters busy time itself: a compute period starts
when the weight regions are attached and at every step boundary, and ends at the next step
boundary; its length on the secure clock is the step's busy time. Time between steps counts as
busy (the chip cannot tell a slow step from a pause), which errs towards more snapshots, never
fewer; `rest()` marks a real pause (the firmware seeing the cores idle).

A simulated chip that owns its clock is the one exception, and only because it has no
physical time: there the caller's number is the simulation's physics (how long the simulated
chip computed), it advances the simulated clock, and the meter then reads that clock like any
other. On real hardware (`HostMonotonicClock`) or with a clock the owner cannot drive, the
number is ignored.
"""

from __future__ import annotations

__all__ = ["BusyMeter"]


class BusyMeter:
    """The start of the current compute period on a clock, in that clock's nanoseconds."""

    def __init__(self) -> None:
        self._start: int | None = None

    def start(self, now_ns: int) -> None:
        """A compute period begins (weights attached, or a pause ended)."""
        self._start = now_ns

    def rest(self) -> None:
        """The chip is idle: time until the next `start` or `lap` is not busy."""
        self._start = None

    def lap(self, now_ns: int) -> int:
        """Busy nanoseconds since the period began (0 if none was running); a new period begins."""
        busy = max(0, now_ns - self._start) if self._start is not None else 0
        self._start = now_ns
        return busy
