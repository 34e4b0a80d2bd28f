"""Errors raised while reading or verifying a published format; all derive from ComputewatchError."""

from __future__ import annotations

from computewatch.crypto.errors import ComputewatchError

__all__ = ["AttestationError", "BootError"]


class BootError(ComputewatchError):
    """Verified boot or firmware installation refused an image (unsigned, altered, rolled back)."""


class AttestationError(ComputewatchError):
    """Attestation evidence does not verify; the message names the failed check."""
