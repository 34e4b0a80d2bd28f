"""Signed writes: sessions, custody, declared runs, hashed transcripts, explanations, verify
jobs, inspection plans, findings and refusals. Each is one DSSE envelope (docs/service.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy import insert
from starlette.concurrency import run_in_threadpool

from computewatch.crypto.dsse import Envelope, verify_envelope
from computewatch.crypto.dsse import parse_statement as parse_intoto_statement
from computewatch.crypto.errors import ComputewatchError, SignatureError
from computewatch.registry import (
    ConflictError,
    CustodyError,
    NotFoundError,
    PlanError,
    RegistryError,
)
from computewatch.registry.custody import parse_statement, require_signature
from computewatch.service import schema as ss
from computewatch.service.auth import SignedWrite, check_signature_count
from computewatch.service.bodies import ENVELOPE_DOC, custody_doc, read_body
from computewatch.service.errors import ServiceError
from computewatch.service.jobs import _inside, check_job_body
from computewatch.service.models import (
    ACTION_MODELS,
    MAX_INT,
    HashedTranscriptHead,
    PlanSeed,
    SubmitTranscript,
    parse_body,
)
from computewatch.service.recorded import Answer, recorded
from computewatch.service.state import Service
from computewatch.service.statements import format_time

__all__ = ["registry_call", "router"]

router = APIRouter(tags=["writes"])
T = TypeVar("T")
# Signed hashed transcripts: v3 is RFC 8785, v2 the legacy encoding (docs/formats.md).
_HASHED_VERSIONS = {"urn:computewatch:hashed-transcript:v2": 1, "urn:computewatch:hashed-transcript:v3": 2}
_ALL_ROLES = ("owner", "inspector", "chipmaker", "fab")


def registry_call(fn: Callable[[], T]) -> T:
    """Run a register operation, turning its refusals into HTTP statuses with its reason."""
    try:
        return fn()
    except NotFoundError as exc:
        raise ServiceError(404, str(exc)) from None
    except ConflictError as exc:
        status = 403 if "already used" in str(exc) else 409
        raise ServiceError(status, f"replayed or stale statement: {exc}" if status == 403 else str(exc)) from None
    except CustodyError as exc:
        raise ServiceError(401 if "no valid signature" in str(exc) else 403, str(exc)) from None
    except PlanError as exc:
        raise ServiceError(409, str(exc)) from None
    except (RegistryError, ComputewatchError, ValueError) as exc:
        raise ServiceError(422, str(exc)) from None


async def _signed(request: Request, action: str, roles: tuple[str, ...]) -> tuple[Service, SignedWrite, Any]:
    """The checked write and its body as the action's declared model (422 names the bad field)."""
    svc: Service = request.app.state.service
    data = await read_body(request, svc.config.max_body)
    write = await run_in_threadpool(svc.auth.verify_write, data, action, roles)
    return svc, write, parse_body(ACTION_MODELS[action], write.body)


def _respond(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status, headers={"X-CW-Resent": "1"} if answer.resent else None)


async def _record(svc: Service, w: SignedWrite, effect: Callable[[Any], Any], *, secret: bool = False) -> JSONResponse:
    return _respond(await run_in_threadpool(lambda: recorded(svc, w, effect, secret=secret)))


def _doc(action: str) -> dict[str, Any]:
    """The envelope's OpenAPI entry, naming the declared model of the statement's body."""
    return {**ENVELOPE_DOC, "x-computewatch-body": {"$ref": f"#/components/schemas/{ACTION_MODELS[action].__name__}"}}


# ---------------------------------------------------------------------- sessions
@router.post("/v1/sessions", summary="Trade a signed request for a dashboard session token", openapi_extra=_doc("session"))
async def new_session(request: Request) -> JSONResponse:
    svc, w, _ = await _signed(request, "session", _ALL_ROLES)

    def effect(conn: Any) -> dict[str, Any]:
        token, expires = svc.auth.new_session(conn, w.principal)
        return {"token": token, "expires": expires, "party": w.principal.name, "role": w.principal.role}

    return await _record(svc, w, effect, secret=True)


@router.delete("/v1/sessions", summary="Revoke the session token this request carries (Authorization: Bearer)")
def end_session(request: Request) -> dict[str, Any]:
    svc: Service = request.app.state.service
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise ServiceError(401, "give the session token to revoke as Authorization: Bearer <token>")
    return {"revoked": svc.auth.revoke(auth[7:].strip())}


# ---------------------------------------------------------------------- custody
def _custody(svc: Service, data: bytes, kind: str) -> dict[str, Any]:
    try:
        st = parse_statement(data)
    except CustodyError as exc:
        raise ServiceError(422, str(exc)) from None
    if st.kind != kind:
        raise ServiceError(422, f"a custody {st.kind} is not submitted here ({kind}s only)")
    check_signature_count(st.envelope, "custody statement")
    signers = ("from", "to") if kind == "transfer" else ("holder",)
    for field in signers:
        name = st.predicate[field]["name"]
        role, key = svc.auth.party_key(name)
        if role == "verifier":
            raise ServiceError(403, f"{name!r} is not a party of the register")
        try:
            require_signature(st.envelope, key, f"{field} party {name!r}")
        except CustodyError as exc:
            raise ServiceError(401, str(exc)) from None
    reg = svc.reg
    return registry_call(lambda: reg.transfer(st.envelope) if kind == "transfer" else reg.report(st.envelope))


@router.post("/v1/custody/transfers", summary="A transfer signed by the holder and countersigned by the receiver", openapi_extra=custody_doc())
async def custody_transfer(request: Request) -> dict[str, Any]:
    svc: Service = request.app.state.service
    data = await read_body(request, svc.config.max_body)
    return await run_in_threadpool(_custody, svc, data, "transfer")


@router.post("/v1/custody/reports", summary="The holder's loss, damage or destruction report", openapi_extra=custody_doc())
async def custody_report(request: Request) -> dict[str, Any]:
    svc: Service = request.app.state.service
    data = await read_body(request, svc.config.max_body)
    return await run_in_threadpool(_custody, svc, data, "report")


# ---------------------------------------------------------------------- Provers
@router.post("/v1/runs", summary="An owner declares a run and its chips", openapi_extra=_doc("declare-run"))
async def declare_run(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "declare-run", ("owner",))
    owner = w.principal.name
    return await _record(svc, w, lambda _: registry_call(lambda: svc.reg.declare_run(owner, b.run_id, list(b.serials),
                                                                                      precommitment=b.precommitment)))


def _check_export(svc: Service, w: SignedWrite, body: SubmitTranscript) -> tuple[HashedTranscriptHead, bytes]:
    from computewatch.crypto.canonical import canonical_json

    if w.principal.is_verifier:
        raise ServiceError(403, "hashed transcripts are submitted by their owner")
    try:
        data = canonical_json(body.export)
        env = Envelope.from_json(data)
        check_signature_count(env, "hashed transcript")
        _, key = svc.auth.party_key(w.principal.name)
        stmt, _ = parse_intoto_statement(verify_envelope(env, [key]), _HASHED_VERSIONS)
    except SignatureError as exc:
        raise ServiceError(401, f"hashed transcript is not signed by {w.principal.name!r}: {exc}") from None
    except ComputewatchError as exc:
        raise ServiceError(422, f"hashed transcript: {exc}") from None
    doc = stmt.get("predicate") if isinstance(stmt, dict) else None
    if not isinstance(doc, dict):
        raise ServiceError(422, f"hashed transcript must be an in-toto statement of type {' or '.join(_HASHED_VERSIONS)}")
    head = parse_body(HashedTranscriptHead, doc, "hashed transcript")
    if stmt.get("subject") != [{"name": "precommitment", "digest": {"blake3-256": head.precommitment_digest}}]:
        raise ServiceError(422, "hashed transcript: the subject is not the document's precommitment digest")
    return head, data


@router.post("/v1/transcripts", summary="Upload a signed hashed transcript (Appendix D step 2)", openapi_extra=_doc("submit-transcript"))
async def submit_transcript(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "submit-transcript", ("owner",))
    head, data = await run_in_threadpool(_check_export, svc, w, b)
    doc = head.model_extra or {}
    steps = doc.get("steps")

    def effect(conn: Any) -> dict[str, Any]:
        res = conn.execute(insert(ss.transcripts).values(
            owner=w.principal.name, run_id=head.run_id, precommitment_digest=head.precommitment_digest, document=data,
            submitted_at=format_time()))
        return {"transcript": int(res.inserted_primary_key[0]), "run_id": head.run_id, "precommitment_digest": head.precommitment_digest,
                "steps": steps.get("count") if isinstance(steps, dict) else None,
                "snapshots": len(doc["snapshots"]) if isinstance(doc.get("snapshots"), list) else 0}

    return await _record(svc, w, effect)


@router.post("/v1/explanations", summary="An owner answers a queued snapshot with the run that explains it", openapi_extra=_doc("explain"))
async def answer(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "explain", ("owner",))

    def effect(conn: Any) -> dict[str, Any]:
        queue = svc.reg.explanation_queue(owner=w.principal.name, status=None)
        if not any(q["serial"] == b.serial and q["counter"] == b.counter for q in queue):
            raise ServiceError(404, f"no snapshot {b.serial}#{b.counter} in the explanation queue of {w.principal.name!r}")
        conn.execute(insert(ss.answers).values(owner=w.principal.name, serial=b.serial, counter=b.counter, run_id=b.run_id, note=b.note,
                                               answered_at=format_time()))
        return {"serial": b.serial, "counter": b.counter, "run_id": b.run_id, "owner": w.principal.name}

    return await _record(svc, w, effect)


@router.post("/v1/explanations/mark", summary="The Verifier closes a queued snapshot (explained or unexplained)", openapi_extra=_doc("mark-explained"))
async def mark(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "mark-explained", ())
    return await _record(svc, w, lambda _: {"changed": registry_call(lambda: svc.reg.mark_explained(
        b.serial, b.counter, b.verdict_ref, status=b.status, shard_digest=b.shard_digest))})


@router.post("/v1/jobs", summary="Hand raw inputs (paths under the data folder) to a trusted-cluster verify job", openapi_extra=_doc("verify"))
async def submit_job(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "verify", ("owner",))

    def effect(conn: Any) -> dict[str, Any]:
        held = None if w.principal.is_verifier else set(svc.reg.chips_of(w.principal.name))
        body = check_job_body(b, svc.config.data_dir, None if w.principal.is_verifier else w.principal.name, held)
        if b.responses or b.challenge_secret:  # step challenges (issue 19): the Verifier's, judged with its secret
            from computewatch.service.api_challenges import answered

            if not w.principal.is_verifier or not b.responses or not b.challenge_secret:
                raise ServiceError(403 if not w.principal.is_verifier else 422,
                                   "responses and challenge_secret go together, and only the Verifier hands them to a job")
            got = answered(svc, list(b.responses))
            body.update(responses=[p for p, _ in got], responses_received_ns=str(max(t for _, t in got)), challenge_secret=b.challenge_secret)
        job_id = svc.jobs.create(conn, w.principal.name, body)
        return {"job": job_id, "status": "queued", "poll": f"/v1/jobs/{job_id}"}

    return await _record(svc, w, effect)


# ---------------------------------------------------------------------- inspectors
@router.post("/v1/plans", summary="Commit a monitoring period's inspection plan; the seed goes back to the signer only", openapi_extra=_doc("commit-plan"))
async def commit_plan(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "commit-plan", ("inspector",))

    def effect(_: Any) -> dict[str, Any]:
        plan, seed = registry_call(lambda: svc.reg.commit_plan(b.period, None if b.owners is None else list(b.owners), **b.args()))
        return {"plan": plan, "seed": seed.hex()}

    return await _record(svc, w, effect)


def _seed(b: PlanSeed, plan_id: int) -> bytes:
    if b.plan != plan_id:
        raise ServiceError(401, f"request was signed for plan {b.plan!r}, not {plan_id}")
    return bytes.fromhex(b.seed)


PlanPath = Annotated[int, Path(ge=1, le=MAX_INT)]


@router.post("/v1/plans/{plan_id}/draw", summary="The chips a committed plan draws (needs the seed until the reveal)", openapi_extra=_doc("draw-plan"))
async def draw_plan(plan_id: PlanPath, request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "draw-plan", ("inspector",))
    seed = _seed(b, plan_id)
    return await _record(svc, w, lambda _: registry_call(lambda: svc.reg.plan(plan_id, seed)))


@router.post("/v1/plans/{plan_id}/reveal", summary="Publish a plan's seed after its period", openapi_extra=_doc("reveal-plan"))
async def reveal_plan(plan_id: PlanPath, request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "reveal-plan", ("inspector",))
    seed = _seed(b, plan_id)
    return await _record(svc, w, lambda _: registry_call(lambda: svc.reg.reveal(plan_id, seed)))


@router.post("/v1/inspections", summary="Record an inspection of a presented chip (its state folder under the data folder)",
             openapi_extra=_doc("record-inspection"))
async def record_inspection(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "record-inspection", ("inspector",))
    chip_dir = _inside(svc.config.data_dir, b.chip_dir, "chip_dir")
    inspector = None if w.principal.is_verifier else w.principal.name
    return await _record(svc, w, lambda _: registry_call(lambda: svc.reg.record_inspection(b.serial, chip_dir, plan=b.plan, inspector=inspector)))


@router.post("/v1/refusals", summary="Record a refused inspection (non-compliance)", openapi_extra=_doc("refuse"))
async def refuse(request: Request) -> JSONResponse:
    svc, w, b = await _signed(request, "refuse", ("inspector",))
    inspector = None if w.principal.is_verifier else w.principal.name
    return await _record(svc, w, lambda _: registry_call(lambda: svc.reg.refuse(b.serial, b.reason, plan=b.plan, inspector=inspector)))
