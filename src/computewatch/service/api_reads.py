"""Scoped reads: the Verifier sees everything, an owner its own chips, runs, transcripts,
findings and jobs; inspectors see chips, plans and inspections. Anonymous reads get 401."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import select

from computewatch.registry import db as reg_db
from computewatch.service import schema as ss
from computewatch.service.api_writes import registry_call
from computewatch.service.auth import Principal, raw_target
from computewatch.service.errors import ServiceError
from computewatch.service.models import MAX_INT
from computewatch.service.regime import regime
from computewatch.service.state import Service

__all__ = ["reader", "router"]

router = APIRouter(tags=["reads"])
Id = Annotated[int, Path(ge=1, le=MAX_INT)]


def reader(request: Request) -> tuple[Service, Principal]:
    svc: Service = request.app.state.service
    who = svc.auth.verify_read(request.method, raw_target(request.scope), request.headers, request.cookies)
    if who is None:
        raise ServiceError(401, "sign the request (RFC 9421: Signature-Input, Signature) or present a session token")
    return svc, who


def _need(who: Principal, *roles: str) -> None:
    if not who.is_verifier and who.role not in roles:
        raise ServiceError(403, f"role {who.role!r} may not read this (needs one of: verifier, {', '.join(roles)})")


@router.get("/v1/service", tags=["public"], summary="The register id, the checkpoint key and the limits")
def service_info(request: Request) -> dict[str, Any]:
    return request.app.state.service.info()


@router.get("/v1/me", summary="Who the request authenticates as")
def me(request: Request) -> dict[str, Any]:
    _, who = reader(request)
    return {"party": who.name, "role": who.role}


def list_chips(svc: Service, who: Principal) -> list[dict[str, Any]]:
    held = svc.held(who)
    chips = svc.reg.items(kind="chip")
    counts = svc.logs.counts()
    out = []
    for c in chips:
        if held is not None and c["serial"] not in held:
            continue
        out.append({**c, "entries": counts.get(c["serial"], 0)})
    return out


@router.get("/v1/chips", summary="Chips the reader may see, with the size of the service's log copy")
def chips(request: Request) -> list[dict[str, Any]]:
    svc, who = reader(request)
    return list_chips(svc, who)


@router.get("/v1/chips/{serial}", summary="A chip: holder, custody trail, inspections, witnessed tree heads")
def chip(serial: str, request: Request) -> dict[str, Any]:
    svc, who = reader(request)
    doc = registry_call(lambda: svc.reg.chip(serial))
    svc.may_read_chip(who, serial)
    return doc


@router.get("/v1/chips/{serial}/entries", summary="Entries of the service's log copy (lines as text)")
def entries(serial: str, request: Request, start: int = Query(0, ge=0, le=MAX_INT), limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    svc, who = reader(request)
    registry_call(lambda: svc.reg.chip(serial))
    svc.may_read_chip(who, serial)
    lines = svc.logs.lines(serial, start, limit)
    return {"serial": serial, "start": start, "entries": [line.decode() for line in lines]}


@router.get("/v1/owners", summary="Parties of the register (an owner sees itself)")
def owners(request: Request) -> list[dict[str, Any]]:
    svc, who = reader(request)
    if who.is_verifier or who.role == "inspector":
        return svc.reg.parties()
    return [svc.reg.party(who.name)]


@router.get("/v1/runs", summary="Declared runs")
def runs(request: Request) -> list[dict[str, Any]]:
    svc, who = reader(request)
    return svc.reg.runs(owner=None if who.is_verifier else who.name)


def list_transcripts(svc: Service, who: Principal) -> list[dict[str, Any]]:
    t = ss.transcripts
    q = select(t.c.id, t.c.owner, t.c.run_id, t.c.precommitment_digest, t.c.submitted_at).order_by(t.c.id)
    if not who.is_verifier:
        q = q.where(t.c.owner == who.name)
    with reg_db.read(svc.engine) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


@router.get("/v1/transcripts", summary="Hashed transcripts submitted")
def transcripts(request: Request) -> list[dict[str, Any]]:
    svc, who = reader(request)
    _need(who, "owner")
    return list_transcripts(svc, who)


@router.get("/v1/transcripts/{tid}", summary="One hashed transcript, as submitted (signed)")
def transcript(tid: Id, request: Request) -> dict[str, Any]:
    svc, who = reader(request)
    t = ss.transcripts
    with reg_db.read(svc.engine) as conn:
        row = conn.execute(select(t).where(t.c.id == tid)).first()
    if row is None:
        raise ServiceError(404, f"no transcript {tid}")
    if not who.is_verifier and row.owner != who.name:
        raise ServiceError(403, f"transcript {tid} belongs to another owner")
    return {"id": tid, "owner": row.owner, "run_id": row.run_id, "submitted_at": row.submitted_at, "export": json.loads(bytes(row.document))}


def queue(svc: Service, who: Principal, status: str | None) -> list[dict[str, Any]]:
    owner = None if (who.is_verifier or who.role == "inspector") else who.name
    rows = svc.reg.explanation_queue(owner=owner, status=status)
    a = ss.answers
    with reg_db.read(svc.engine) as conn:
        answers = {(r.owner, r.serial, r.counter): r for r in conn.execute(select(a))}
    for q in rows:
        ans = answers.get((q["owner"], q["serial"], q["counter"]))
        q["answer"] = None if ans is None else {"run_id": ans.run_id, "note": ans.note, "answered_at": ans.answered_at}
    return rows


@router.get("/v1/explanations", summary="The explanation queue (pending unless status=all|explained|unexplained)")
def explanations(request: Request, status: str = Query("pending", pattern="^(pending|explained|unexplained|all)$")) -> list[dict[str, Any]]:
    svc, who = reader(request)
    return queue(svc, who, None if status == "all" else status)


@router.get("/v1/plans", summary="Committed inspection plans (public commitments)")
def plans(request: Request) -> list[dict[str, Any]]:
    svc, _ = reader(request)
    return svc.reg.plans()


@router.get("/v1/plans/{plan_id}", summary="A plan: document, commitment and, once revealed, the drawn chips")
def plan(plan_id: Id, request: Request) -> dict[str, Any]:
    svc, _ = reader(request)
    return registry_call(lambda: svc.reg.plan(plan_id))


def list_inspections(svc: Service, who: Principal, plan: int | None = None) -> list[dict[str, Any]]:
    held = svc.held(who)
    rows = svc.reg.inspections(plan=plan)
    return [r for r in rows if held is None or r.get("serial") in held]


@router.get("/v1/inspections", summary="Inspection outcomes (findings, refusals)")
def inspections(request: Request, plan: int | None = Query(None, ge=1, le=MAX_INT)) -> list[dict[str, Any]]:
    svc, who = reader(request)
    return list_inspections(svc, who, plan)


def job_for(svc: Service, who: Principal, job_id: int) -> dict[str, Any]:
    job = svc.jobs.get(job_id)
    if not who.is_verifier and job["owner"] != who.name:
        raise ServiceError(403, f"job {job_id} belongs to another party")
    return job


@router.get("/v1/jobs", summary="Verify jobs and their progress")
def jobs(request: Request) -> list[dict[str, Any]]:
    svc, who = reader(request)
    return svc.jobs.list(None if who.is_verifier else who.name)


@router.get("/v1/jobs/{job_id}", summary="One job: status and progress (poll this)")
def job(job_id: Id, request: Request) -> dict[str, Any]:
    svc, who = reader(request)
    return job_for(svc, who, job_id)


@router.get("/v1/jobs/{job_id}/verdict", summary="The job's verdict document (JSON)")
def verdict(job_id: Id, request: Request) -> dict[str, Any]:
    svc, who = reader(request)
    job_for(svc, who, job_id)
    return svc.jobs.verdict(job_id)


@router.get("/v1/jobs/{job_id}/report", summary="The job's self-contained HTML report", response_class=HTMLResponse)
def report(job_id: Id, request: Request) -> FileResponse:
    svc, who = reader(request)
    job_for(svc, who, job_id)
    path = svc.jobs.folder(job_id) / "report.html"
    if not path.is_file():
        raise ServiceError(404, f"job {job_id} has no report (yet)")
    return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"})


@router.get("/v1/jobs/{job_id}/figures/{name}.png", summary="One figure of the job's verdict", response_class=FileResponse)
def figure(job_id: Id, name: str, request: Request) -> FileResponse:
    svc, who = reader(request)
    job_for(svc, who, job_id)
    if name not in svc.jobs.figure_names(job_id):
        raise ServiceError(404, f"job {job_id} has no figure {name!r}")
    return FileResponse(svc.jobs.folder(job_id) / "figures" / f"{name}.png", media_type="image/png")


@router.get("/v1/regime", summary="Eq. 1 for the registered stockpile; detection probability achieved per plan")
def regime_doc(request: Request) -> dict[str, Any]:
    svc, who = reader(request)
    _need(who, "inspector")
    return regime(svc.reg)
