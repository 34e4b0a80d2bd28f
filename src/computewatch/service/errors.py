"""Errors the service answers with an HTTP status and a reason."""

from __future__ import annotations

__all__ = ["ServiceError"]


class ServiceError(Exception):
    """A refused request: `status` (401 bad signature, 403 replay or wrong role, 404, 409, 413,
    422 ...) and a one-line `reason`; nothing was stored."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(str(reason).split())
