"""Server-rendered dashboard pages (Jinja2), read with a session: the cookie `/login` sets, or
`Authorization: Bearer <token>` (or a signed read), as the API accepts (docs/service.md)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from computewatch.registry.standing import open_findings, standing
from computewatch.service.api_reads import job_for, list_chips, list_inspections, queue
from computewatch.service.api_writes import registry_call
from computewatch.service.auth import SESSION_COOKIE, Principal, raw_target
from computewatch.service.bodies import read_body
from computewatch.service.errors import ServiceError
from computewatch.service.models import MAX_INT
from computewatch.service.regime import regime
from computewatch.service.state import Service
from computewatch.service.templates import environment

__all__ = ["error_page", "router"]

router = APIRouter(include_in_schema=False)
_ENV = environment()
# Scripts only from the service itself (static/*.js), never inline: an injected <script> does not run.
_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# The job page's progress poller (no inline script: the CSP forbids it). It reads the job id
# from its own tag's data-job attribute.
_JOB_JS = """(function () {
  var tag = document.currentScript, job = tag && tag.getAttribute("data-job");
  if (!job) { return; }
  function poll() {
    fetch("/v1/jobs/" + job, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (j) {
      document.getElementById("status").textContent = j.status;
      document.getElementById("bar").style.width = Math.round(j.progress.fraction * 100) + "%";
      document.getElementById("stage").textContent = j.progress.stage + " " + j.progress.done + "/" + j.progress.total;
      if (j.status === "done" || j.status === "failed") { location.reload(); } else { setTimeout(poll, 1000); }
    }).catch(function () { setTimeout(poll, 2000); });
  }
  poll();
})();
"""
_STATIC = {"job.js": _JOB_JS}


def _page(name: str, http_status: int = 200, **ctx: Any) -> HTMLResponse:
    html = _ENV.get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=http_status, headers={"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"})


def error_page(request: Request, exc: ServiceError) -> Response:
    if exc.status == 401:
        return RedirectResponse("/login", status_code=303)
    return _page("error.html", exc.status, title="Error", who=None, status=exc.status, reason=exc.reason)


def _who(request: Request) -> tuple[Service, Principal]:
    svc: Service = request.app.state.service
    who = svc.auth.verify_read(request.method, raw_target(request.scope), request.headers, request.cookies)
    if who is None:
        raise ServiceError(401, "sign in")
    return svc, who


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return _page("login.html", title="Sign in", who=None, message=None)


def _same_origin(request: Request) -> bool:
    """A browser's POST names where the form was: only this service's own pages may sign in
    (login CSRF: another site must not sign a browser into the attacker's session)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    from urllib.parse import urlsplit

    parts = urlsplit(source)
    return bool(parts.scheme in ("http", "https") and parts.netloc and parts.netloc == request.headers.get("host"))


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in _STATIC:
        raise ServiceError(404, f"no static file {name!r}")
    return Response(_STATIC[name], media_type="text/javascript", headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@router.post("/login")
async def login(request: Request) -> Response:
    from urllib.parse import parse_qs

    svc: Service = request.app.state.service
    if not _same_origin(request):
        return _page("login.html", 403, title="Sign in", who=None, message="sign-in refused: the form was not sent from this site")
    body = await read_body(request, 4096)
    token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
    try:
        svc.auth.session(token)
    except ServiceError as exc:
        return _page("login.html", 401, title="Sign in", who=None, message=exc.reason)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", max_age=svc.config.session_ttl_s)
    return resp


@router.get("/logout")
def logout(request: Request) -> Response:
    # The cookie is SameSite=Strict: another site's link arrives without it, so this revokes
    # only the session of the browser that asked.
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        request.app.state.service.auth.revoke(token)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


@router.get("/")
def index(request: Request) -> HTMLResponse:
    svc, who = _who(request)
    sees_all = who.is_verifier or who.role == "inspector"
    chips = list_chips(svc, who)
    rows = queue(svc, who, None)
    jobs = svc.jobs.list(None if who.is_verifier else who.name)
    provers = standing(rows)
    latest: dict[str, dict[str, Any]] = {}
    for job in sorted(jobs, key=lambda j: j["id"]):
        if job.get("verdict"):
            latest[job["owner"]] = job
    for p in provers:
        p["job"] = latest.pop(p["owner"], None)
    provers += [{"owner": owner, "state": "no queued snapshots", "unexplained": 0, "pending": 0, "explained": 0, "job": job}
                for owner, job in sorted(latest.items())]
    findings = open_findings(provers, list_inspections(svc, who), svc.reg.investigations() if sees_all else [],
                             svc.reg.flags() if sees_all else [])
    judged = [p for p in provers if p["job"] and p["job"].get("verdict") == "violation"]
    for p in judged:  # a verify job's violation counts even where no queued snapshot shows it
        p["state"] = "violation"
    at = sum(1 for f in findings if f["kind"] == "unexplained snapshots")
    findings[at:at] = [{"kind": "violation verdict", "party": p["owner"], "subject": f"verify job {p['job']['id']}",
                        "detail": "the Verifier's verdict on the transcripts it handed over is a violation"} for p in judged]
    counts = {
        "chips": len(chips), "entries": sum(c["entries"] for c in chips),
        "parties": len(svc.reg.parties()) if who.is_verifier else 1, "plans": len(svc.reg.plans()),
        "pending": sum(1 for r in rows if r["status"] == "pending"),
        "unexplained": sum(1 for r in rows if r["status"] == "unexplained"), "jobs": len(jobs),
    }
    return _page("index.html", title="Overview", who=who, counts=counts, findings=findings, provers=provers,
                 register=svc.reg.register_id, vkey=svc.signer.vkey)


@router.get("/chips")
def chips_page(request: Request) -> HTMLResponse:
    svc, who = _who(request)
    return _page("chips.html", title="Chips", who=who, chips=list_chips(svc, who))


@router.get("/chips/{serial}")
def chip_page(serial: str, request: Request) -> HTMLResponse:
    svc, who = _who(request)
    chip = registry_call(lambda: svc.reg.chip(serial))
    svc.may_read_chip(who, serial)
    try:
        tree, size = svc.logs.tree(serial)
        head = {"size": size, "root": tree.root(size).hex()}
    except ServiceError:
        head = {"size": 0, "root": ""}
    return _page("chip.html", title=f"Chip {serial}", who=who, chip=chip, head=head)


@router.get("/owners")
def owners_page(request: Request) -> HTMLResponse:
    svc, who = _who(request)
    parties = svc.reg.parties() if (who.is_verifier or who.role == "inspector") else [svc.reg.party(who.name)]
    held = Counter(c["holder"] for c in svc.reg.items(kind="chip"))
    return _page("owners.html", title="Owners and parties", who=who, parties=parties, held=held)


@router.get("/plans")
def plans_page(request: Request) -> HTMLResponse:
    svc, who = _who(request)
    return _page("plans.html", title="Inspection plans and outcomes", who=who, plans=svc.reg.plans(), inspections=list_inspections(svc, who))


@router.get("/queue")
def queue_page(request: Request) -> HTMLResponse:
    svc, who = _who(request)
    return _page("queue.html", title="Explanation queue", who=who, queue=queue(svc, who, None))


@router.get("/jobs")
def jobs_page(request: Request) -> HTMLResponse:
    svc, who = _who(request)
    return _page("jobs.html", title="Verify jobs and verdicts", who=who, jobs=svc.jobs.list(None if who.is_verifier else who.name))


@router.get("/jobs/{job_id}")
def job_page(job_id: Annotated[int, Path(ge=1, le=MAX_INT)], request: Request) -> HTMLResponse:
    svc, who = _who(request)
    job = job_for(svc, who, job_id)
    verdict = svc.jobs.verdict(job_id) if job["status"] == "done" else None
    return _page("job.html", title=f"Verify job {job_id}", who=who, job=job, verdict=verdict, figures=svc.jobs.figure_names(job_id))


@router.get("/regime")
def regime_page(request: Request) -> HTMLResponse:
    svc, who = _who(request)
    if not (who.is_verifier or who.role == "inspector"):
        raise ServiceError(403, "the regime page is for the Verifier and inspectors")
    return _page("regime.html", title="Regime", who=who, r=regime(svc.reg))
