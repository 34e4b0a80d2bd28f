"""Step challenges over HTTP (issue 19): the same exchange as `computewatch challenge` / `respond`.

1. The Verifier POSTs a challenge it made with its secret (`computewatch challenge ... --out`),
   addressed to the owner who holds the run: a signed write (`step-challenge`, Verifier only).
   The service checks the document's shape only; the tag is checked by the judge, with the secret
   the Verifier hands to the verify job.
2. The owner GETs it (a signed read; only the owner it is addressed to, and the Verifier).
3. The owner POSTs its response folder as a tar archive (the signed upload of `/v1/inputs`): it is
   unpacked under `<data>/responses/<owner>/challenge-<id>/`, must answer exactly the stored
   challenge, and is received once; the service's clock at receipt is what the deadline is
   judged by.
4. A verify job (`POST /v1/jobs`, the Verifier) names the answered challenges in `responses` and
   the secret in `challenge_secret`; the worker judges them as `verify --responses` does.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy import insert, select

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import FormatError
from computewatch.formats.challenge import check_challenge, read_response
from computewatch.registry import db as reg_db
from computewatch.service import schema as ss
from computewatch.service.api_reads import reader
from computewatch.service.api_uploads import _DOC as _UPLOAD_DOC
from computewatch.service.api_uploads import receive_archive, signed_upload
from computewatch.service.api_writes import _doc, _record, _signed
from computewatch.service.errors import ServiceError
from computewatch.service.models import MAX_INT
from computewatch.service.state import Service
from computewatch.service.statements import format_time

__all__ = ["answered", "router"]

router = APIRouter(tags=["step challenges"])
log = logging.getLogger("computewatch.service")
Id = Annotated[int, Path(ge=1, le=MAX_INT)]


@router.post("/v1/challenges", summary="The Verifier issues a step challenge to the owner who holds the run", openapi_extra=_doc("step-challenge"))
async def issue(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "step-challenge", ())
    try:
        doc = check_challenge(b.challenge)
    except FormatError as exc:
        raise ServiceError(422, f"challenge: {exc}") from None
    try:
        role, _key = svc.auth.party_key(b.owner)
    except ServiceError:
        role = None
    if role != "owner":
        raise ServiceError(422, f"owner {b.owner!r} is not an owner registered with the register")

    def effect(conn: Any) -> dict[str, Any]:
        res = conn.execute(insert(ss.step_challenges).values(owner=b.owner, run_id=doc["run_id"], challenge=canonical_json(doc),
                                                             issued_by=w.principal.name, issued_at=format_time()))
        cid = int(res.inserted_primary_key[0])
        return {"challenge": cid, "run_id": doc["run_id"], "owner": b.owner, "steps": len(doc["steps"]), "poll": f"/v1/challenges/{cid}"}

    return await _record(svc, w, effect)


def _row(svc: Service, cid: int) -> Any:
    with reg_db.read(svc.engine) as conn:
        row = conn.execute(select(ss.step_challenges).where(ss.step_challenges.c.id == cid)).first()
        answer = conn.execute(select(ss.step_responses).where(ss.step_responses.c.challenge_id == cid)).first()
    if row is None:
        raise ServiceError(404, f"no challenge {cid}")
    return row, answer


@router.get("/v1/challenges/{cid}", summary="A step challenge, for the owner it is addressed to (and the Verifier)")
def get_challenge(cid: Id, request: Request) -> dict[str, Any]:
    svc, who = reader(request)
    row, answer = _row(svc, cid)
    if not who.is_verifier and who.name != row.owner:
        raise ServiceError(404, f"no challenge {cid}")  # another owner's challenge does not exist for this reader
    return {"id": cid, "owner": row.owner, "run_id": row.run_id, "issued_at": row.issued_at, "challenge": json.loads(row.challenge),
            "response": None if answer is None else {"path": answer.path, "sha256": answer.sha256, "received_ns": answer.received_ns}}


@router.post("/v1/challenges/{cid}/response", summary="The owner uploads its response folder (a tar archive, signed as uploads are)",
             openapi_extra=_UPLOAD_DOC)
async def upload_response(cid: Id, request: Request) -> dict[str, Any]:
    svc, who, claimed = await signed_upload(request)
    row, answer = _row(svc, cid)
    if who.name != row.owner:
        raise ServiceError(403, f"challenge {cid} is addressed to {row.owner!r}; only it answers")
    if answer is not None:
        raise ServiceError(409, f"challenge {cid} was answered already")
    received_ns = time.time_ns()  # the deadline is judged by the service's clock at receipt
    rel = f"responses/{who.name}/challenge-{cid}"
    dest = svc.config.data_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    count, size = await receive_archive(svc, request, claimed, dest, f"the response to challenge {cid}")
    try:
        doc = read_response(dest)
        if canonical_json(doc.get("challenge")) != bytes(row.challenge):
            raise ServiceError(422, f"the response answers another challenge than challenge {cid}")
        with reg_db.write(svc.engine) as conn:
            conn.execute(insert(ss.step_responses).values(challenge_id=cid, owner=who.name, path=rel, sha256=claimed, received_ns=str(received_ns)))
    except FormatError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ServiceError(422, f"not a response folder: {exc}") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    log.info("response to challenge %d from %s: %d members, %d bytes", cid, who.name, count, size)
    return {"challenge": cid, "path": rel, "answers": len(doc["answers"]), "sha256": claimed, "received_ns": str(received_ns)}


def answered(svc: Service, ids: list[int]) -> list[tuple[str, int]]:
    """(path under the data folder, received ns) of each answered challenge; 404/409 otherwise."""
    out = []
    for cid in ids:
        _, answer = _row(svc, cid)
        if answer is None:
            raise ServiceError(409, f"challenge {cid} has no response yet")
        out.append((answer.path, int(answer.received_ns)))
    return out
