"""Reading request bodies under a size limit, and documenting raw bodies in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from computewatch.service.errors import ServiceError

__all__ = ["BATCH_TYPE", "ENTRY_TYPE", "ENVELOPE_DOC", "batch_doc", "entry_doc", "read_body"]

ENTRY_TYPE = "application/vnd.computewatch.chip-log-entry+json"
BATCH_TYPE = "application/vnd.computewatch.chip-log-batch"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 20:
            raise ServiceError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise ServiceError(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _raw(content_type: str, description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description, "content": {content_type: {"schema": {"type": "string", "format": "binary"}}}}}


ENVELOPE_DOC = _raw(
    "application/json",
    "A DSSE v1 envelope (canonical JSON) around an in-toto Statement v1 with predicate type "
    "urn:computewatch:service-request:v2 (RFC 8785; v1 still accepted), signed by the party's registered key (docs/service.md).",
)


def entry_doc() -> dict[str, Any]:
    return _raw(ENTRY_TYPE, "One chip log entry line: canonical JSON signed by the chip's boot key (docs/formats.md, Log).")


def batch_doc() -> dict[str, Any]:
    return _raw(BATCH_TYPE, "Consecutive chip log entry lines, each ending in a newline (as in the chip's log file), the last a "
                            "version 2 checkpoint the chip signed that covers every entry before it (docs/service.md, Batches).")


def custody_doc() -> dict[str, Any]:
    return _raw("application/json", "A custody statement: DSSE envelope signed as docs/registry.md, Custody statements, says.")
