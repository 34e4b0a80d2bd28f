"""Errors raised by the analysis: invalid parameters and settings the Prover cannot carry out."""

from __future__ import annotations

from computewatch.crypto.errors import ComputewatchError

__all__ = ["AnalysisError", "InfeasibleSettingError", "InvalidParameterError"]


class AnalysisError(ComputewatchError, ValueError):
    """Base of every error `computewatch.analysis` raises on bad input (a ValueError too, since
    every one of them is a bad argument value)."""


class InvalidParameterError(AnalysisError):
    """A parameter is outside its domain (p outside (0, 1), a non-positive rate, size or duration)."""


class InfeasibleSettingError(AnalysisError):
    """The setting describes a run the Prover cannot do, so no sample size answers it.

    `reason` is the human-readable explanation, also used as the CLI's `reason` field.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
