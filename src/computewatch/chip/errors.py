"""Errors the chip raises; all derive from ComputewatchError so callers catch one base."""

from __future__ import annotations

from computewatch.crypto.errors import ComputewatchError
from computewatch.formats.errors import AttestationError, BootError

__all__ = ["AttestationError", "BootError", "ChipError", "ChipFrozenError", "ReportError"]


class ChipError(ComputewatchError):
    """The chip refused an operation (not booted, no memory attached, malformed state)."""


class ReportError(ChipError):
    """Report-to-server mode: the receiver did not acknowledge an entry; the chip stays frozen."""


class ChipFrozenError(ChipError):
    """The chip is frozen until every log entry has been acknowledged by the receiver."""
