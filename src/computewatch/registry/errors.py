"""Errors the register raises; all derive from ComputewatchError, so callers catch one base."""

from __future__ import annotations

from computewatch.crypto.errors import ComputewatchError

__all__ = ["ConflictError", "CustodyError", "NotFoundError", "PlanError", "RegistryError"]


class RegistryError(ComputewatchError):
    """A request the register refuses (bad input, a rule it enforces); nothing was changed."""


class NotFoundError(RegistryError):
    """No such chip, item, party, plan or inspection in the register."""


class CustodyError(RegistryError):
    """A custody change is refused: wrong or missing signature, replayed statement, wrong holder."""


class ConflictError(CustodyError):
    """Another change to the same item committed first (concurrent transfer); retry on fresh state."""


class PlanError(RegistryError):
    """An inspection plan cannot be committed, derived or revealed as asked."""
