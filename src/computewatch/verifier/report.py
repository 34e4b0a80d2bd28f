"""The verdict as one self-contained HTML page (docs/report.md).

Inline CSS, figures as base64 PNG data URIs, no script and no external resource (a Content
Security Policy says so to the browser). Every value from the verdict is escaped: run ids,
paths, chip serials and details can be the Prover's strings. The JSON verdict stays the record;
the page is its reading.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from computewatch.crypto.atomic import atomic_write

__all__ = ["MAX_TABLE_ROWS", "render_html", "write_report"]

MAX_TABLE_ROWS = 1000  # per table; the JSON holds every row

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#212121;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 6px;word-break:break-all}
.verdict{display:inline-block;padding:10px 22px;border-radius:6px;font-size:26px;font-weight:700;color:#fff;letter-spacing:.04em}
.v-compliant{background:#2e7d32}.v-violation{background:#c62828}.v-inconclusive{background:#ef6c00}.v-unknown{background:#616161}
table{border-collapse:collapse;width:100%;margin:6px 0;background:#fff;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td{word-break:break-word}
table.kv th{width:240px}
.pass{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:600}.none{color:#757575;font-weight:600}
.report{color:#1565c0;font-weight:600}
tr.bad td{background:#ffebee}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
figure{margin:12px 0;background:#fff;border:1px solid #e0e0e0;padding:8px}
figure img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#616161}
.note{color:#616161;font-size:12px}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _dict(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _flops(x: Any) -> str:
    """FLOPs as 1.23e12 (exact integer beside it), or "unknown"."""
    if isinstance(x, bool) or x is None:
        return "unknown"
    try:
        v = int(x) if isinstance(x, (int, str)) else float(x)
    except (TypeError, ValueError):
        return _e(x)
    if isinstance(v, float) and not math.isfinite(v):
        return _e(v)
    return f"{v:.3e} <span class=note>({v:,.0f})</span>" if abs(v) >= 1e6 else _e(f"{v:,.0f}")


def _value(x: Any) -> str:
    if x is None:
        return "<span class=none>—</span>"
    if isinstance(x, float):
        return _e(f"{x:.6g}")
    if isinstance(x, (list, tuple)):
        return _e(", ".join(str(v) for v in x))
    return _e(x)


def _status(passed: Any, *, yes: str = "pass", no: str = "FAIL") -> str:
    if passed is True:
        return f"<span class=pass>{yes}</span>"
    if passed is False:
        return f"<span class=fail>{no}</span>"
    return "<span class=none>not decided</span>"


def _outcome(outcome: Any) -> str:
    cls = {"ok": "pass", "violation": "fail", "report": "report", "error": "none"}.get(str(outcome), "none")
    return f"<span class={cls}>{_e(outcome)}</span>"


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table; values are already-escaped HTML."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class=kv>{body}</table>"


def _table(headers: list[str], rows: list[list[str]], *, bad: list[bool] | None = None, empty: str = "none") -> str:
    """A table of already-escaped cells, cut at MAX_TABLE_ROWS with a note."""
    if not rows:
        return f"<p class=note>{_e(empty)}</p>"
    shown = rows[:MAX_TABLE_ROWS]
    flags = (bad or [False] * len(rows))[:MAX_TABLE_ROWS]
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{' class=bad' if flag else ''}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
        for row, flag in zip(shown, flags, strict=True)
    )
    more = f"<p class=note>{len(rows) - len(shown)} more row(s) in the JSON verdict.</p>" if len(rows) > len(shown) else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _summary(v: Mapping[str, Any]) -> str:
    snaps = _dict(v.get("snapshots"))
    sel = _dict(v.get("selection"))
    policy = _dict(v.get("policy"))
    total, spent = v.get("total_flops"), v.get("verification_flops")
    share = ""
    if isinstance(total, (int, float)) and isinstance(spent, (int, float)) and total and not isinstance(total, bool):
        share = f" <span class=note>({100 * spent / total:.2f}% of the runs' compute)</span>"
    rows = [
        ("runs", _e(len(_list(v.get("runs"))))),
        ("total FLOPs (all runs)", _flops(total)),
        ("verification FLOPs (trusted cluster)", _flops(spent) + share),
        ("snapshots logged / explained", f"{_value(snaps.get('logged'))} / {_value(snaps.get('explained'))}"),
        ("segments replayed / total", f"{_value(sel.get('segments_replayed'))} / {_value(sel.get('segments_total'))}"),
        ("replay mode", _value(v.get("mode"))),
        ("isolation of trusted-cluster jobs", _value(v.get("isolation"))),
        ("policy", f"{_value(policy.get('name'))} <code>{_e(policy.get('digest', ''))}</code>" if policy else "none"),
    ]
    return _kv(rows)


def _checks(v: Mapping[str, Any]) -> str:
    checks = [_dict(c) for c in _list(v.get("checks"))]
    rows = [[f"<code>{_e(c.get('name', '?'))}</code>", _status(c.get("passed")), _e(c.get("detail", ""))] for c in checks]
    return _table(["check", "result", "detail"], rows, bad=[c.get("passed") is False for c in checks], empty="no checks were run")


def _rules(v: Mapping[str, Any]) -> str:
    rules = [_dict(r) for r in _list(v.get("rules"))]
    rows = [
        [f"<code>{_e(r.get('id', '?'))}</code>", f"<span class=mono>{_e(r.get('run_id', ''))}</span>", _e(r.get("kind", "")),
         _value(r.get("applies")), _outcome(r.get("outcome")), _e(r.get("detail", ""))]
        for r in rules
    ]
    empty = "no policy was applied" if not v.get("policy") else "the policy has no rules"
    return _table(["rule", "run", "kind", "applies", "outcome", "detail"], rows,
                  bad=[r.get("outcome") == "violation" for r in rules], empty=empty)


def _distance(d: Any) -> str:
    d = _dict(d)
    if not d:
        return _value(None)
    return _e(", ".join(f"{k} {d[k]:.4g}" if isinstance(d[k], float) else f"{k} {d[k]}" for k in ("l2", "relative", "cosine") if k in d))


def _run(run: Mapping[str, Any]) -> str:
    compute = _dict(run.get("compute"))
    mem = run.get("memorization")
    mem_text = (
        _value(None)
        if not isinstance(mem, Mapping)
        else f"{_status(mem.get('passed'))} statistic {_value(mem.get('statistic'))}, p = {_value(mem.get('p_value'))},"
        f" {_value(mem.get('segments'))} segment(s)"
    )
    meta = _kv(
        [
            ("run directory", f"<code>{_e(run.get('run_dir', ''))}</code>"),
            ("steps", _value(run.get("steps"))),
            ("world size / strategy", f"{_value(run.get('world_size'))} / {_value(run.get('strategy'))}"),
            ("checkpoint every", _value(run.get("checkpoint_every"))),
            ("total FLOPs", _flops(run.get("total_flops"))),
            ("FLOPs per step", _flops(run.get("flops_per_step"))),
            ("busy seconds / at peak", f"{_value(compute.get('busy_seconds'))} / {_value(compute.get('peak_flops_seconds'))}"),
            ("utilization", _value(compute.get("utilization"))),
            ("memorization test", mem_text),
        ]
    )
    segs = [_dict(s) for s in _list(run.get("segments"))]
    seg_rows = [
        [_value(s.get("from")), _value(s.get("to")), _value(_list(s.get("reasons"))), _status(s.get("passed")),
         _distance(s.get("distance")), _e(s.get("detail", ""))]
        for s in segs
    ]
    snaps = [_dict(s) for s in _list(run.get("snapshots"))]
    snap_rows = [
        [f"<span class=mono>{_e(s.get('chip', ''))}</span>", _value(s.get("counter")), _value(s.get("step")),
         _value(s.get("rank")), _value(s.get("clock_ns")), _value(s.get("busy_ns")),
         _status(s.get("explained"), yes="yes", no="NO"), _e(s.get("detail", ""))]
        for s in snaps
    ]
    return (
        f"<h3>run <span class=mono>{_e(run.get('run_id', '?'))}</span></h3>{meta}"
        f"<h4>segments</h4>"
        + _table(["from", "to", "why selected", "result", "distance", "detail"], seg_rows,
                 bad=[s.get("passed") is False for s in segs], empty="no segments")
        + "<h4>snapshots</h4>"
        + _table(["chip", "counter", "step", "rank", "clock ns", "busy ns", "explained", "detail"], snap_rows,
                 bad=[s.get("explained") is False for s in snaps], empty="no snapshots")
    )


def _unexplained(v: Mapping[str, Any]) -> str:
    """Every logged snapshot no transcript explained, those of withheld runs included."""
    snaps = [_dict(s) for s in _list(v.get("unexplained_snapshots"))]
    rows = [
        [f"<span class=mono>{_e(s.get('chip', ''))}</span>", _value(s.get("counter")), _value(s.get("step")),
         f"<span class=mono>{_e(s.get('run_id') or 'none')}</span>", _value(s.get("busy_ns")), _e(s.get("detail", ""))]
        for s in snaps
    ]
    return _table(["chip", "log entry", "step", "run logged", "busy ns", "why not explained"], rows,
                  bad=[True] * len(rows), empty="none: every logged snapshot was explained")


def _selection(v: Mapping[str, Any]) -> str:
    sel = _dict(v.get("selection"))
    tol = v.get("tolerance")
    parts = [
        _kv(
            [
                ("seed commitment", f"<code>{_e(sel.get('seed_commitment', ''))}</code>"),
                ("seed (revealed)", f"<code>{_e(sel.get('seed', ''))}</code>"),
                ("segments total / replayed", f"{_value(sel.get('segments_total'))} / {_value(sel.get('segments_replayed'))}"),
            ]
        ),
        "<h3>tolerance calibration</h3>",
    ]
    if isinstance(tol, Mapping):
        parts.append(
            _kv(
                [
                    ("epsilon", _value(tol.get("epsilon"))),
                    ("false-reject rate", _value(tol.get("false_reject_rate"))),
                    ("false-accept rate", _value(tol.get("false_accept_rate"))),
                    ("calibration samples", _value(tol.get("samples"))),
                ]
            )
        )
    else:
        parts.append("<p class=note>none: exact mode compares digests bit for bit.</p>")
    return "".join(parts)


def _figures(figs: Mapping[str, bytes | str]) -> str:
    from computewatch.verifier.plots import FIGURES

    out = []
    for name, data in figs.items():
        title = FIGURES.get(name, name)
        if isinstance(data, bytes):
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            out.append(f"<figure><img src=\"{uri}\" alt=\"{_e(title)}\"><figcaption>{_e(title)}</figcaption></figure>")
    return "".join(out) or "<p class=note>no figures</p>"


def render_html(verdict: Mapping[str, Any], *, figures: Mapping[str, bytes | str] | None = None) -> str:
    """The verdict as one self-contained HTML page.

    `figures` maps figure name -> PNG bytes (default: `plots.figures(verdict)`); pass `{}` for
    a page without figures.
    """
    v = _dict(verdict)
    if figures is None:
        from computewatch.verifier.plots import figures as make_figures

        figures = make_figures(v, fmt="png")
    word = str(v.get("verdict", "unknown"))
    cls = word if word in ("compliant", "violation", "inconclusive") else "unknown"
    runs = [_dict(r) for r in _list(v.get("runs"))]
    body = [
        "<h1>computewatch verdict</h1>",
        f"<p><span class='verdict v-{cls}'>{_e(word.upper())}</span></p>",
        _summary(v),
        f"<h2 id=unexplained>snapshots not explained ({len(_list(v.get('unexplained_snapshots')))})</h2>",
        _unexplained(v),
        "<h2>checks</h2>",
        _checks(v),
        "<h2>rules</h2>",
        _rules(v),
        "<h2>figures</h2>",
        _figures(figures),
        "<h2>runs</h2>",
        "".join(_run(r) for r in runs) or "<p class=note>no runs</p>",
        "<h2>segment selection</h2>",
        _selection(v),
        "<h2>step challenges</h2>",
        _steps_section(v),
        "<p class=note>The JSON verdict is the record; this page shows it.</p>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>computewatch verdict: {_e(word)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _steps_section(v: Mapping[str, Any]) -> str:
    from computewatch.verifier.report_steps import render_steps  # issue 19

    return render_steps(v)


def write_report(verdict: Mapping[str, Any], path: str | Path, *, figures: Mapping[str, bytes | str] | None = None) -> Path:
    """Render and write the page atomically (write, fsync, rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, render_html(verdict, figures=figures).encode("utf-8"))
    return path
