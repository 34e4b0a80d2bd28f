"""Errors the chip raises; all derive from ComputewatchError so callers catch one base."""

from __future__ import annotations

from computewatch.crypto.errors import ComputewatchError

__all__ = ["AttestationError", "BootError", "ChipError", "ChipFrozenError", "ReportError"]


class ChipError(ComputewatchError):
    """The chip refused an operation (not booted, no memory attached, malformed state)."""


class BootError(ChipError):
    """Verified boot or firmware installation refused an image (unsigned, altered, rolled back)."""


class ReportError(ChipError):
    """Report-to-server mode: the receiver did not acknowledge an entry; the chip stays frozen."""


class ChipFrozenError(ChipError):
    """The chip is frozen until every log entry has been acknowledged by the receiver."""


class AttestationError(ComputewatchError):
    """Attestation evidence does not verify; the message names the failed check."""
