"""Chips report entries; anyone fetches signed tree heads and RFC 9162 proofs of a log copy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from computewatch.crypto.errors import FormatError
from computewatch.service.bodies import batch_doc, entry_doc, read_body
from computewatch.service.checkpoint import origin
from computewatch.service.errors import ServiceError
from computewatch.service.models import MAX_INT
from computewatch.service.state import Service

__all__ = ["router"]

router = APIRouter()


def _svc(request: Request) -> Service:
    return request.app.state.service


def _latest_chip_checkpoint(svc: Service, serial: str, size: int) -> dict[str, Any] | None:
    """The newest `checkpoint` entry the chip itself signed (its own tree head) in the copy."""
    import json

    start = max(0, size - 64)
    for line in reversed(svc.logs.lines(serial, start, 64)):
        e = json.loads(line)
        if e.get("kind") == "checkpoint":
            return {"counter": e["counter"], "tree_size": e["body"]["tree_size"], "root": e["body"]["root"], "line": line.decode()}
    return None


@router.post(
    "/v1/chips/{serial}/entries",
    tags=["chips"],
    summary="A report-mode chip sends one signed log entry; the ack comes after a durable write",
    openapi_extra=entry_doc(),
    responses={200: {"description": 'The ack: canonical JSON {"v":1,"serial","counter","entry_sha256"}'}},
)
async def post_entry(serial: str, request: Request) -> Response:
    svc = _svc(request)
    line = await read_body(request, svc.config.max_entry)
    return _acked(await run_in_threadpool(svc.logs.append, serial, line))


@router.post(
    "/v1/chips/{serial}/batches",
    tags=["chips"],
    summary="A chip sends a batch of log v2 entries ending in its signed checkpoint; all are checked and stored, or none",
    openapi_extra=batch_doc(),
    responses={200: {"description": 'The ack of the batch\'s last entry (its checkpoint): canonical JSON {"v":1,"serial","counter","entry_sha256"}'}},
)
async def post_batch(serial: str, request: Request) -> Response:
    from computewatch.service.fastpath import batch_lines

    svc = _svc(request)
    lines = batch_lines(await read_body(request, svc.config.max_batch), svc.config.max_batch_entries)
    return _acked(await run_in_threadpool(svc.logs.append_batch, serial, lines))


def _acked(ack: Any) -> Response:
    return Response(ack.body, media_type="application/json", headers={"X-CW-Duplicate": "1" if ack.duplicate else "0"})


@router.get("/v1/chips/{serial}/tree-head", tags=["public"], summary="The log copy's signed tree head (JSON)")
def tree_head(serial: str, request: Request) -> dict[str, Any]:
    svc = _svc(request)
    tree, size = svc.logs.tree(serial)
    root = tree.root(size)
    return {
        "serial": serial,
        "size": size,
        "root": root.hex(),
        "checkpoint": svc.signer.checkpoint(origin(svc.reg.register_id, serial), size, root),
        "key": svc.signer.vkey,
        "chip_checkpoint": _latest_chip_checkpoint(svc, serial, size),
        # Entries at or past this are stored but pending: no signature of their boot covers them yet.
        "attributed": svc.logs.attributed(serial),
    }


@router.get(
    "/v1/chips/{serial}/checkpoint",
    tags=["public"],
    summary="The log copy's tree head as a C2SP checkpoint (signed note)",
    response_class=PlainTextResponse,
)
def checkpoint(serial: str, request: Request) -> PlainTextResponse:
    svc = _svc(request)
    tree, size = svc.logs.tree(serial)
    return PlainTextResponse(svc.signer.checkpoint(origin(svc.reg.register_id, serial), size, tree.root(size)))


@router.get("/v1/chips/{serial}/proofs/inclusion", tags=["public"], summary="RFC 9162 inclusion proof of entry `index` in the tree of `size`")
def inclusion(serial: str, request: Request, index: int = Query(ge=0, le=MAX_INT), size: int | None = Query(default=None, ge=1, le=MAX_INT)) -> dict[str, Any]:
    svc = _svc(request)
    tree, have = svc.logs.tree(serial)
    size = have if size is None else size
    if size > have or index >= size:
        raise ServiceError(404, f"the copy of chip {serial}'s log holds {have} entries: no entry {index} in a tree of {size}")
    try:
        proof = tree.inclusion_proof(index, size)
    except FormatError as exc:
        raise ServiceError(422, str(exc)) from None
    return {"serial": serial, "index": index, "size": size, "leaf_hash": tree.leaf(index).hex(), "root": tree.root(size).hex(),
            "proof": [p.hex() for p in proof]}


@router.get("/v1/chips/{serial}/proofs/consistency", tags=["public"], summary="RFC 9162 consistency proof from tree size `old` to `new`")
def consistency(serial: str, request: Request, old: int = Query(ge=1, le=MAX_INT), new: int | None = Query(default=None, ge=1, le=MAX_INT)) -> dict[str, Any]:
    svc = _svc(request)
    tree, have = svc.logs.tree(serial)
    new = have if new is None else new
    if new > have or old > new:
        raise ServiceError(404, f"the copy of chip {serial}'s log holds {have} entries: no proof from {old} to {new}")
    proof = tree.consistency_proof(old, new)
    return {"serial": serial, "old": old, "new": new, "old_root": tree.root(old).hex(), "new_root": tree.root(new).hex(),
            "proof": [p.hex() for p in proof]}

