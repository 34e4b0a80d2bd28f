"""The chip-entry routes without the framework: `POST /v1/chips/{serial}/entries` is the one
request a fleet sends thousands of times a second (and `/batches`, chip log v2's batches
ending in a signed checkpoint, its cheaper form), so the app (`ServiceApp`) answers them before
FastAPI's middleware stack and routing (same body limit, same checks in `ChipLogs`, same answers
and error bodies as the declared route, which stays in the app and its OpenAPI document). Every
other request goes to FastAPI unchanged.

The common case (the chip is loaded, its next entry, its lock free) is checked on the event
loop's thread and waits for its group commit as a coroutine (`ChipLogs.append_in_loop`): no
thread hand-off per entry. Anything else (a chip's first entry since start, a resend, a gap,
another process that stored the counter) takes the threaded `ChipLogs.append`."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from computewatch.formats.chip_entry import split_log
from computewatch.service.errors import ServiceError

__all__ = ["ServiceApp", "answer_batch", "answer_entry", "batch_lines"]

log = logging.getLogger("computewatch.service")
_ENTRY_PATH = re.compile(r"/v1/chips/([^/]+)/(entries|batches)")  # as the routes' {serial}: one path segment


class ServiceApp(FastAPI):
    """FastAPI whose chip-entry requests are answered before its middleware stack."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _ENTRY_PATH.fullmatch(scope["path"])
            if m is not None:
                answer = answer_entry if m.group(2) == "entries" else answer_batch
                await answer(self.state.service, m.group(1), scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def answer_entry(svc: Any, serial: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Check, durably store and acknowledge one chip log entry (or refuse it) over ASGI."""

    async def append() -> Any:
        line = await _read_body(scope, receive, svc.config.max_entry)
        ack = await svc.logs.append_in_loop(serial, line)
        return ack if ack is not None else await run_in_threadpool(svc.logs.append, serial, line)

    await _answer(append, scope, send)


async def answer_batch(svc: Any, serial: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Check, durably store and acknowledge a batch of chip log entries ending in its signed
    checkpoint (or refuse all of it) over ASGI; the common case on the event loop, as an entry."""

    async def append() -> Any:
        lines = batch_lines(await _read_body(scope, receive, svc.config.max_batch), svc.config.max_batch_entries)
        ack = await svc.logs.append_batch_in_loop(serial, lines)
        return ack if ack is not None else await run_in_threadpool(svc.logs.append_batch, serial, lines)

    await _answer(append, scope, send)


def batch_lines(body: bytes, limit: int) -> list[bytes]:
    """The entry lines of a batch body (each line ends in a newline, as in the chip's log file)."""
    lines, torn = split_log(body)
    if torn:
        raise ServiceError(422, f"batch ends in {torn} bytes without a newline: every entry line ends in one")
    if not lines:
        raise ServiceError(422, "empty batch: a batch holds one or more entries ending in a signed checkpoint")
    if len(lines) > limit:
        raise ServiceError(413, f"batch of {len(lines)} entries exceeds the limit of {limit} entries")
    return lines


async def _answer(append: Any, scope: Scope, send: Send) -> None:
    try:
        ack = await append()
        status, body = 200, ack.body
        headers = [(b"content-type", b"application/json"), (b"x-cw-duplicate", b"1" if ack.duplicate else b"0")]
    except ServiceError as exc:
        (log.error if exc.status >= 500 else log.info)("POST %s refused %d: %s", scope["path"][:200], exc.status, exc.reason)
        status, body, headers = _refused(exc.status, exc.reason)
    except Exception:
        log.exception("POST %s failed", scope["path"][:200])
        status, body, headers = _refused(500, "internal error (the server's log says more)", close=False)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """`bodies.read_body` on the raw ASGI messages (no starlette Request per entry): the body,
    refused with 413 as soon as it exceeds `limit` bytes, declared or streamed."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or len(value) > 20:
                raise ServiceError(400, "Content-Length is not a number")
            if int(value) > limit:
                raise ServiceError(413, f"body of {value.decode()} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _refused(status: int, reason: str, close: bool = True) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    # As the app's error answers to a POST: the connection closes (the rest of a refused body is not read).
    headers = [(b"content-type", b"application/json")] + ([(b"connection", b"close")] if close else [])
    return status, _json({"error": reason, "status": status}), headers


def _json(doc: dict[str, Any]) -> bytes:
    import json

    # As starlette's JSONResponse renders it.
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
