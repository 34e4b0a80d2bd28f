"""The chip-entry route without the framework's routing: `POST /v1/chips/{serial}/entries` is
the one request a fleet sends thousands of times a second, so an ASGI middleware answers it
directly (same body limit, same checks in `ChipLogs.append`, same answers and error bodies as
the declared route, which stays in the app and its OpenAPI document). Every other request goes
on to the app unchanged."""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from computewatch.service.bodies import read_body
from computewatch.service.errors import ServiceError

__all__ = ["EntryFastPath"]

log = logging.getLogger("computewatch.service")
_ENTRY_PATH = re.compile(r"/v1/chips/([^/]+)/entries")  # as the route's {serial}: one path segment


class EntryFastPath:
    def __init__(self, app: ASGIApp, service: Any) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _ENTRY_PATH.fullmatch(scope["path"])
            if m is not None:
                await self._entry(m.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _entry(self, serial: str, scope: Scope, receive: Receive, send: Send) -> None:
        svc = self.service
        try:
            line = await read_body(Request(scope, receive), svc.config.max_entry)
            ack = await run_in_threadpool(svc.logs.append, serial, line)
            response: Response = Response(ack.body, media_type="application/json",
                                          headers={"X-CW-Duplicate": "1" if ack.duplicate else "0"})
        except ServiceError as exc:
            (log.error if exc.status >= 500 else log.info)("POST %s refused %d: %s", scope["path"][:200], exc.status, exc.reason)
            response = _refused(exc.status, exc.reason)
        except Exception:  # noqa: BLE001 (answered as the app answers any unexpected error)
            log.exception("POST %s failed", scope["path"][:200])
            response = _refused(500, "internal error (the server's log says more)", close=False)
        await response(scope, receive, send)


def _refused(status: int, reason: str, close: bool = True) -> JSONResponse:
    # As the app's error answers to a POST: the connection closes (the rest of a refused body is not read).
    return JSONResponse({"error": reason, "status": status}, status_code=status, headers={"Connection": "close"} if close else None)
