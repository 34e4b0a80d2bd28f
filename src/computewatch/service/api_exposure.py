"""Where the chips are and what they could hide, over HTTP: location checks per chip, the
covert-capacity bound (`/v1/exposure`), and the dashboard page `/exposure` that plots the bound
per monitoring period and lists every chip's latest location check (docs/registry.md
"Location", "Exposure")."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from computewatch.service.api_reads import reader
from computewatch.service.api_writes import registry_call
from computewatch.service.auth import SESSION_COOKIE, Principal
from computewatch.service.errors import ServiceError
from computewatch.service.state import Service
from computewatch.service.templates import environment

__all__ = ["exposure_svg", "router"]

router = APIRouter(tags=["reads"])
_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'"


def _need_oversight(who: Principal) -> None:
    if not (who.is_verifier or who.role == "inspector"):
        raise ServiceError(403, "exposure is for the Verifier and inspectors")


def _p(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ServiceError(422, f"p must lie strictly between 0 and 1, got {p!r}")
    return p


@router.get("/v1/exposure", summary="The covert-capacity bound per owner and overall (Verifier, inspectors)")
def exposure(request: Request, period: str | None = Query(None), p: float = Query(0.9)) -> dict[str, Any]:
    svc, who = reader(request)
    _need_oversight(who)
    return registry_call(lambda: svc.reg.exposure(period, p=_p(p)))


@router.get("/v1/chips/{serial}/locations", summary="A chip's location checks, oldest first")
def locations(serial: str, request: Request) -> list[dict[str, Any]]:
    svc, who = reader(request)
    docs = registry_call(lambda: svc.reg.locations(serial))
    svc.may_read_chip(who, serial)
    return docs


def exposure_svg(rows: list[tuple[str, float]], width: int = 640, bar: int = 22) -> str:
    """A horizontal bar chart of max hidden FLOPs per period on a log scale (inline SVG: the
    dashboard's CSP allows no scripts and no external images)."""
    if not rows:
        return ""
    values = [v for _, v in rows if v > 0]
    lo = math.floor(math.log10(min(values))) if values else 0
    hi = math.ceil(math.log10(max(values))) if values else 1
    hi = max(hi, lo + 1)
    label_w, plot_w = 150, width - 150 - 80
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{(len(rows) + 1) * (bar + 6) + 10}" '
             'role="img" aria-label="max hidden FLOPs per period">']
    for i, (name, v) in enumerate(rows):
        y = 6 + i * (bar + 6)
        w = 0 if v <= 0 else max(1.0, (math.log10(v) - lo) / (hi - lo) * plot_w)
        parts.append(f'<text x="0" y="{y + bar - 6}" font-size="12">{_esc(name)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" fill="#c62828"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 6}" font-size="12">{v:.3g}</text>')
    y = 6 + len(rows) * (bar + 6) + 12
    parts.append(f'<text x="{label_w}" y="{y}" font-size="11">10^{lo}</text>'
                 f'<text x="{label_w + plot_w - 30}" y="{y}" font-size="11">10^{hi} FLOPs (log scale)</text></svg>')
    return "".join(parts)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


_PAGE = """{% extends "base.html" %}{% block body %}
<p>The largest undeclared training run the register's actual inspections do not rule out at
p = {{ p }}: every larger run would have been caught with probability at least p
(docs/registry.md "Exposure"). Per period (the periods of committed plans) and with every inspection.</p>
<figure>{{ svg | safe }}<figcaption>max hidden FLOPs, all owners pooled</figcaption></figure>
<table><tr><th>period</th><th>owner</th><th>chips</th><th>inspected</th><th>unaccounted</th><th>unexplained snapshots</th><th>max hidden FLOPs</th></tr>
{% for label, doc in periods %}{% for name, e in [("(all, pooled)", doc.overall)] + doc.owner_rows %}
<tr><td>{{ label }}</td><td>{{ name }}</td><td>{{ e.chips }}</td><td>{{ e.inspected }}</td><td>{{ e.unaccounted }}</td>
<td>{{ e.unexplained_snapshots }}</td><td>{{ "%.3g" % e.max_hidden_flops }}</td></tr>{% endfor %}{% endfor %}</table>
<h2>Where the chips are: latest location checks</h2>
<table id="locations"><tr><th>chip</th><th>facility</th><th>checked</th><th>outcome</th><th>bounds (km, vacuum)</th><th>finding</th></tr>
{% for serial, loc in locations %}<tr><td class="mono">{{ serial }}</td><td>{{ loc.facility }}</td><td>{{ loc.recorded_at }}</td>
<td class="{{ 'clean' if loc.inside else 'finding' }}">{{ 'inside' if loc.inside else 'finding' }}</td>
<td>{% for name, b in loc.bounds_km.items() %}{{ name }}: {{ "%.1f" % b.vacuum }} {% endfor %}</td><td>{{ loc.finding or '' }}</td></tr>
{% else %}<tr><td colspan="6">no location evidence yet</td></tr>{% endfor %}</table>
{% endblock %}"""
_TEMPLATE = environment().from_string(_PAGE)


@router.get("/exposure", include_in_schema=False)
def exposure_page(request: Request, p: float = Query(0.9)) -> HTMLResponse:
    svc: Service = request.app.state.service
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise ServiceError(401, "sign in")
    who = svc.auth.session(token)
    _need_oversight(who)
    p = _p(p)
    labels = sorted({plan["period"] for plan in svc.reg.plans()})
    periods = []
    for label in [*labels, None]:
        doc = svc.reg.exposure(label, p=p)
        doc["owner_rows"] = [(o["name"], o) for o in doc["owners"]]
        periods.append((label or "all inspections", doc))
    svg = exposure_svg([(label, doc["overall"]["max_hidden_flops"]) for label, doc in periods])
    located = []
    for c in svc.reg.items(kind="chip"):
        checks = svc.reg.locations(c["serial"])
        if checks:
            located.append((c["serial"], checks[-1]))
    html = _TEMPLATE.render(title="Exposure and location", who=who, p=p, periods=periods, svg=svg, locations=located)
    return HTMLResponse(html, headers={"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"})
