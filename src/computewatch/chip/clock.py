"""The chip's secure clock (TPM 2.0 clock-info shape) and the clock sources behind it.

A real chip counts powered time in a counter only firmware can write and persists it to
non-volatile memory now and then; after an unclean stop the persisted value may lag, which is
what the TPM's "safe" flag reports. Here the chip persists its reading with every log entry and
at a clean stop, so a reboot continues from the last logged reading (never backwards) and marks
the session unsafe when the previous stop was unclean.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ClockReading", "HostMonotonicClock", "SecureClock", "SimulatedClock"]


@runtime_checkable
class SecureClock(Protocol):
    """A source of monotonic nanoseconds since the source was created (one chip power-on)."""

    def elapsed_ns(self) -> int: ...


class SimulatedClock:
    """Chip time that moves only when told: tests run days of chip time in seconds."""

    def __init__(self) -> None:
        self._ns = 0

    def elapsed_ns(self) -> int:
        return self._ns

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes backwards: seconds must be >= 0")
        self._ns += round(seconds * 1e9)


class HostMonotonicClock:
    """Real elapsed time from the host's monotonic clock (for runs on real hardware)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic_ns()

    def elapsed_ns(self) -> int:
        return time.monotonic_ns() - self._t0


@dataclass(frozen=True)
class ClockReading:
    """What the chip reports about its clock: TPMS_CLOCK_INFO plus the busy-time counter."""

    clock_ns: int  # chip time, monotonic across boots
    busy_ns: int  # accumulated busy (training) time: the snapshot process runs in this time
    reset_count: int  # boots (power-on resets) so far
    restart_count: int  # boots that followed an unclean stop
    safe: bool  # False when this boot followed an unclean stop (time may have been lost)

    def to_json(self) -> dict[str, object]:
        return {
            "clock_ns": str(self.clock_ns),
            "busy_ns": str(self.busy_ns),
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "safe": self.safe,
        }
