"""The demo's front page (`report.html`): the world, the plan, and one verdict per Prover with
its evidence, linking to the Verifier's full report of each (`verifier/report-<owner>.html`,
`computewatch.verifier.report`). Self-contained like those: inline CSS, no script, every value
HTML-escaped, a Content-Security-Policy that loads nothing; its only links are to the two
report pages beside it."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from computewatch.crypto.atomic import atomic_write
from computewatch.demo.inspection import plan_note

if TYPE_CHECKING:
    from computewatch.demo.scenario import DemoResult

__all__ = ["render_index", "write_index"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0;width:100%}td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.compliant{color:#fff;background:#2e7d32}.violation{color:#fff;background:#c62828}
.inconclusive{color:#fff;background:#ef6c00}.verdict{padding:.1em .5em;border-radius:.3em;font-weight:bold}
tr.fail td{background:#fdecea}code{font-size:.9em}
"""


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _flops(value: Any, h: float) -> str:
    if value is None:
        return "unknown (no transcript replayed)"
    return f"{float(value):.3e} ({float(value) / h:.2f} H)"


def render_index(result: DemoResult) -> str:
    w, rows = result.world, []
    for p in result.provers:
        failed = "<br>".join(f"<b>{_e(v['check'])}</b>: {_e(v['detail'])}" for v in p.violations) or "none"
        rows.append(
            f"<tr class={'fail' if p.violations else 'ok'}><td>{_e(p.name)}</td>"
            f"<td><span class='verdict {_e(p.verdict)}'>{_e(p.verdict)}</span></td>"
            f"<td class=unexplained>{p.snapshots_logged - p.snapshots_explained}</td>"
            f"<td>{p.snapshots_explained} / {p.snapshots_logged}</td><td>{_e(_flops(p.total_flops, result.policy_threshold))}</td>"
            f"<td>{failed}</td><td><a href='{_e(p.report_file.relative_to(result.root))}'>full report</a></td></tr>"
        )
    runs = []
    for p in result.provers:
        for r in p.runs:
            runs.append(f"<tr><td>{_e(r.owner)}</td><td><code>{_e(r.run_id)}</code></td><td>{_e(', '.join(r.serials))}</td>"
                        f"<td>{r.size.steps} steps, {_e(r.size.preset)}</td><td>{'yes' if r.declared else 'no'}</td>"
                        f"<td>{'yes' if r.submitted else 'no (withheld)'}</td></tr>")
    chips = "".join(
        f"<tr><td>{_e(c.serial)}</td><td>{_e(c.die)}</td><td>{_e(c.owner)}</td><td>{_e(c.rack)}</td></tr>" for c in w.chips
    )
    ins = "".join(
        f"<tr class={'fail' if i['outcome'] != 'clean' else 'ok'}><td>{_e(i['serial'])}</td><td>{_e(i['owner'])}</td>"
        f"<td>{_e(i['outcome'])}</td><td>{_e(i['tree_size'])}</td><td>{_e(i['queued'])}</td></tr>"
        for i in result.inspections
    )
    plan = result.plan
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>computewatch demo</title><style>{_CSS}</style></head><body>
<h1>computewatch demo: fab to verdict</h1>
<p>Register <code>{_e(w.registry.register_id)}</code>; policy threshold H = {result.policy_threshold:.3g} FLOPs;
everything under <code>{_e(result.root)}</code>.</p>
<h2>Verdicts</h2>
<table><tr><th>Prover</th><th>verdict</th><th>snapshots unexplained</th><th>snapshots explained / logged</th><th>training FLOPs</th><th>failed checks</th><th></th></tr>
{''.join(rows)}</table>
<h2>Runs</h2>
<table><tr><th>owner</th><th>run</th><th>chips</th><th>size</th><th>declared</th><th>transcript handed over</th></tr>{''.join(runs)}</table>
<h2>Inspection plan {_e(plan.get('plan'))} ({_e(plan.get('period'))})</h2>
<p>{_e(plan.get('samples'))} of {_e(plan.get('population'))} chips drawn; seed commitment <code>{_e(plan.get('seed_commitment'))}</code>;
revealed: {'yes' if plan.get('revealed') else 'no'}. {_e(plan_note(plan) if 'setting' in plan else plan.get('reason') or '')}</p>
<table><tr><th>chip</th><th>holder</th><th>outcome</th><th>log entries read</th><th>snapshots queued</th></tr>{ins}</table>
<h2>Chips and custody</h2>
<table><tr><th>serial</th><th>packaged from die</th><th>holder</th><th>facility</th></tr>{chips}</table>
<p>Timings (s): {_e(', '.join(f'{k} {v}' for k, v in result.timings.items()))}</p>
</body></html>
"""


def write_index(result: DemoResult) -> None:
    atomic_write(result.report, render_index(result).encode("utf-8"), mode=0o644)
