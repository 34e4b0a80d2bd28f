"""Signed writes: sessions, custody, declared runs, hashed transcripts, explanations, verify
jobs, inspection plans, findings and refusals. Each is one DSSE envelope (docs/service.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from computewatch.crypto.canonical import parse_canonical_json
from computewatch.crypto.dsse import Envelope, verify_envelope
from computewatch.crypto.errors import ComputewatchError, SignatureError
from computewatch.registry import (
    ConflictError,
    CustodyError,
    NotFoundError,
    PlanError,
    RegistryError,
)
from computewatch.registry import db as reg_db
from computewatch.registry.custody import parse_statement, require_signature
from computewatch.service import schema as ss
from computewatch.service.auth import SignedWrite
from computewatch.service.bodies import ENVELOPE_DOC, custody_doc, read_body
from computewatch.service.errors import ServiceError
from computewatch.service.jobs import _inside, check_job_body
from computewatch.service.state import Service
from computewatch.service.statements import format_time

__all__ = ["registry_call", "router"]

router = APIRouter(tags=["writes"])
T = TypeVar("T")
_HASHED_PREDICATE = "urn:computewatch:hashed-transcript:v2"
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


async def _signed(request: Request, action: str, roles: tuple[str, ...]) -> tuple[Service, SignedWrite]:
    svc: Service = request.app.state.service
    data = await read_body(request, svc.config.max_body)
    write = await run_in_threadpool(svc.auth.verify_write, data, action, roles)
    return svc, write


def _fields(body: dict[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    missing, extra = required - set(body), set(body) - required - optional
    if missing or extra:
        raise ServiceError(422, f"body fields: missing {sorted(missing)}, unexpected {sorted(extra)}")


def _str(body: dict[str, Any], name: str, limit: int = 200) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v or len(v) > limit:
        raise ServiceError(422, f"{name!r} must be a non-empty string of at most {limit} characters")
    return v


def _int(body: dict[str, Any], name: str) -> int:
    v = body.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ServiceError(422, f"{name!r} must be a non-negative integer")
    return v


def _num(body: dict[str, Any], name: str, default: float | None = None) -> float | None:
    v = body.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ServiceError(422, f"{name!r} must be a number")
    try:
        return float(v)
    except ValueError:
        raise ServiceError(422, f"{name!r} must be a number") from None


def _in_one_transaction(svc: Service, write: SignedWrite, effect: Callable[[Any], T]) -> T:
    """Claim the nonce, keep the statement and make the effect, all committed together."""
    try:
        with reg_db.write(svc.engine) as conn:
            svc.auth.claim(conn, write)
            return effect(conn)
    except IntegrityError as exc:
        raise ServiceError(409, f"already recorded: {str(exc.orig).splitlines()[0] if exc.orig else exc}") from None


def _with_register(svc: Service, write: SignedWrite, effect: Callable[[], T]) -> T:
    """Claim the nonce first (a replay is refused before anything happens), then the register's own transaction."""
    svc.auth.claim_alone(write)
    return registry_call(effect)


# ---------------------------------------------------------------------- sessions
@router.post("/v1/sessions", summary="Trade a signed request for a dashboard session token", openapi_extra=ENVELOPE_DOC)
async def new_session(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "session", _ALL_ROLES)
    token, expires = await run_in_threadpool(_in_one_transaction, svc, w, lambda conn: svc.auth.new_session(conn, w.principal))
    return {"token": token, "expires": expires, "party": w.principal.name, "role": w.principal.role}


# ---------------------------------------------------------------------- custody
def _custody(svc: Service, data: bytes, kind: str) -> dict[str, Any]:
    try:
        st = parse_statement(data)
    except CustodyError as exc:
        raise ServiceError(422, str(exc)) from None
    if st.kind != kind:
        raise ServiceError(422, f"a custody {st.kind} is not submitted here ({kind}s only)")
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
@router.post("/v1/runs", summary="An owner declares a run and its chips", openapi_extra=ENVELOPE_DOC)
async def declare_run(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "declare-run", ("owner",))
    b = w.body
    _fields(b, {"run_id", "serials"}, {"precommitment"})
    serials = b["serials"]
    if not isinstance(serials, list) or not serials or not all(isinstance(x, str) for x in serials):
        raise ServiceError(422, "'serials' must be a non-empty list of chip serials")
    pre = b.get("precommitment")
    if pre is not None and not isinstance(pre, str):
        raise ServiceError(422, "'precommitment' must be a hex digest")
    owner = w.principal.name
    return await run_in_threadpool(_with_register, svc, w, lambda: svc.reg.declare_run(owner, _str(b, "run_id"), serials, precommitment=pre))


def _check_export(svc: Service, w: SignedWrite) -> tuple[dict[str, Any], bytes]:
    env_obj = w.body.get("export")
    if set(w.body) != {"export"} or not isinstance(env_obj, dict):
        raise ServiceError(422, "body must be {\"export\": the signed hashed transcript (DSSE envelope object)}")
    from computewatch.crypto.canonical import canonical_json

    data = canonical_json(env_obj)
    try:
        env = Envelope.from_json(data)
        if w.principal.is_verifier:
            raise ServiceError(403, "hashed transcripts are submitted by their owner")
        _, key = svc.auth.party_key(w.principal.name)
        stmt = parse_canonical_json(verify_envelope(env, [key]))
    except SignatureError as exc:
        raise ServiceError(401, f"hashed transcript is not signed by {w.principal.name!r}: {exc}") from None
    except ComputewatchError as exc:
        raise ServiceError(422, f"hashed transcript: {exc}") from None
    doc = stmt.get("predicate") if isinstance(stmt, dict) else None
    if not isinstance(stmt, dict) or stmt.get("predicateType") != _HASHED_PREDICATE or not isinstance(doc, dict):
        raise ServiceError(422, f"hashed transcript must be an in-toto statement of type {_HASHED_PREDICATE}")
    if doc.get("v") != 1 or doc.get("kind") != "computewatch/hashed-transcript":
        raise ServiceError(422, "hashed transcript: the predicate is not a v1 computewatch/hashed-transcript document")
    pre = doc.get("precommitment_digest")
    if stmt.get("subject") != [{"name": "precommitment", "digest": {"blake3-256": pre}}]:
        raise ServiceError(422, "hashed transcript: the subject is not the document's precommitment digest")
    if not isinstance(doc.get("run_id"), str) or not isinstance(pre, str):
        raise ServiceError(422, "hashed transcript: run_id and precommitment_digest must be strings")
    return doc, data


@router.post("/v1/transcripts", summary="Upload a signed hashed transcript (Appendix D step 2)", openapi_extra=ENVELOPE_DOC)
async def submit_transcript(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "submit-transcript", ("owner",))
    doc, data = await run_in_threadpool(_check_export, svc, w)

    def effect(conn: Any) -> int:
        res = conn.execute(insert(ss.transcripts).values(
            owner=w.principal.name, run_id=doc["run_id"], precommitment_digest=doc["precommitment_digest"], document=data,
            submitted_at=format_time()))
        return int(res.inserted_primary_key[0])

    tid = await run_in_threadpool(_in_one_transaction, svc, w, effect)
    return {"transcript": tid, "run_id": doc["run_id"], "precommitment_digest": doc["precommitment_digest"],
            "steps": (doc.get("steps") or {}).get("count"), "snapshots": len(doc.get("snapshots") or [])}


@router.post("/v1/explanations", summary="An owner answers a queued snapshot with the run that explains it", openapi_extra=ENVELOPE_DOC)
async def answer(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "explain", ("owner",))
    b = w.body
    _fields(b, {"serial", "counter", "run_id"}, {"note"})
    serial, counter, run_id = _str(b, "serial"), _int(b, "counter"), _str(b, "run_id")
    note = b.get("note", "")
    if not isinstance(note, str) or len(note) > 4000:
        raise ServiceError(422, "'note' must be a string of at most 4000 characters")

    def effect(conn: Any) -> dict[str, Any]:
        queue = svc.reg.explanation_queue(owner=w.principal.name, status=None)
        if not any(q["serial"] == serial and q["counter"] == counter for q in queue):
            raise ServiceError(404, f"no snapshot {serial}#{counter} in the explanation queue of {w.principal.name!r}")
        conn.execute(insert(ss.answers).values(owner=w.principal.name, serial=serial, counter=counter, run_id=run_id, note=note,
                                               answered_at=format_time()))
        return {"serial": serial, "counter": counter, "run_id": run_id, "owner": w.principal.name}

    return await run_in_threadpool(_in_one_transaction, svc, w, effect)


@router.post("/v1/explanations/mark", summary="The Verifier closes a queued snapshot (explained or unexplained)", openapi_extra=ENVELOPE_DOC)
async def mark(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "mark-explained", ())
    b = w.body
    _fields(b, {"serial", "counter", "status", "verdict_ref"}, {"shard_digest"})
    serial, counter, status, ref = _str(b, "serial"), _int(b, "counter"), _str(b, "status"), _str(b, "verdict_ref")
    digest = b.get("shard_digest")
    n = await run_in_threadpool(_with_register, svc, w, lambda: svc.reg.mark_explained(serial, counter, ref, status=status, shard_digest=digest))
    return {"changed": n}


@router.post("/v1/jobs", summary="Hand raw inputs (paths under the data folder) to a trusted-cluster verify job", openapi_extra=ENVELOPE_DOC)
async def submit_job(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "verify", ("owner",))

    def effect(conn: Any) -> int:
        held = None if w.principal.is_verifier else set(svc.reg.chips_of(w.principal.name))
        body = check_job_body(w.body, svc.config.data_dir, held)
        return svc.jobs.create(conn, w.principal.name, body)

    job_id = await run_in_threadpool(_in_one_transaction, svc, w, effect)
    return {"job": job_id, "status": "queued", "poll": f"/v1/jobs/{job_id}"}


# ---------------------------------------------------------------------- inspectors
def _plan_args(b: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime, timezone

    _fields(b, {"period", "flops"}, {"owners", "T", "T_m", "p", "f", "a", "formula", "group_by_facility", "start"})
    owners = b.get("owners")
    if owners is not None and (not isinstance(owners, list) or not all(isinstance(o, str) for o in owners)):
        raise ServiceError(422, "'owners' must be a list of party names (or absent: every owner)")
    start = b.get("start")
    if start is not None:
        try:
            start = datetime.strptime(str(start), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise ServiceError(422, "'start' must be ISO-8601 UTC like 2026-05-20T12:00:00Z") from None
    formula = b.get("formula", "exact")
    if formula not in ("exact", "linear"):
        raise ServiceError(422, "'formula' must be exact or linear")
    return {"period": _str(b, "period", 64), "owners": owners, "flops": _num(b, "flops"), "start": start, "T": _num(b, "T", 30.0),
            "T_m": _num(b, "T_m", 30.0), "p": _num(b, "p", 0.9), "f": _num(b, "f", 0.1), "a": _num(b, "a"), "formula": formula,
            "group_by_facility": bool(b.get("group_by_facility", False))}


@router.post("/v1/plans", summary="Commit a monitoring period's inspection plan; the seed goes back to the signer only", openapi_extra=ENVELOPE_DOC)
async def commit_plan(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "commit-plan", ("inspector",))
    args = _plan_args(w.body)
    period, owners = args.pop("period"), args.pop("owners")
    plan, seed = await run_in_threadpool(_with_register, svc, w, lambda: svc.reg.commit_plan(period, owners, **args))
    return {"plan": plan, "seed": seed.hex()}


def _seed(b: dict[str, Any], plan_id: int) -> bytes:
    _fields(b, {"plan", "seed"})
    if b["plan"] != plan_id:
        raise ServiceError(401, f"request was signed for plan {b['plan']!r}, not {plan_id}")
    try:
        seed = bytes.fromhex(_str(b, "seed", 128))
    except ValueError:
        raise ServiceError(422, "'seed' must be hex") from None
    return seed


@router.post("/v1/plans/{plan_id}/draw", summary="The chips a committed plan draws (needs the seed until the reveal)", openapi_extra=ENVELOPE_DOC)
async def draw_plan(plan_id: int, request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "draw-plan", ("inspector",))
    seed = _seed(w.body, plan_id)
    return await run_in_threadpool(_with_register, svc, w, lambda: svc.reg.plan(plan_id, seed))


@router.post("/v1/plans/{plan_id}/reveal", summary="Publish a plan's seed after its period", openapi_extra=ENVELOPE_DOC)
async def reveal_plan(plan_id: int, request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "reveal-plan", ("inspector",))
    seed = _seed(w.body, plan_id)
    return await run_in_threadpool(_with_register, svc, w, lambda: svc.reg.reveal(plan_id, seed))


@router.post("/v1/inspections", summary="Record an inspection of a presented chip (its state folder under the data folder)", openapi_extra=ENVELOPE_DOC)
async def record_inspection(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "record-inspection", ("inspector",))
    b = w.body
    _fields(b, {"serial", "chip_dir"}, {"plan"})
    serial = _str(b, "serial")
    plan = b.get("plan")
    if plan is not None:
        plan = _int(b, "plan")
    chip_dir = _inside(svc.config.data_dir, b.get("chip_dir"), "chip_dir")
    inspector = None if w.principal.is_verifier else w.principal.name
    return await run_in_threadpool(_with_register, svc, w, lambda: svc.reg.record_inspection(serial, chip_dir, plan=plan, inspector=inspector))


@router.post("/v1/refusals", summary="Record a refused inspection (non-compliance)", openapi_extra=ENVELOPE_DOC)
async def refuse(request: Request) -> dict[str, Any]:
    svc, w = await _signed(request, "refuse", ("inspector",))
    b = w.body
    _fields(b, {"serial", "reason"}, {"plan"})
    serial, reason = _str(b, "serial"), _str(b, "reason", 4000)
    plan = b.get("plan")
    if plan is not None:
        plan = _int(b, "plan")
    inspector = None if w.principal.is_verifier else w.principal.name
    return await run_in_threadpool(_with_register, svc, w, lambda: svc.reg.refuse(serial, reason, plan=plan, inspector=inspector))

