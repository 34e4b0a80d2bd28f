"""The dashboard's Jinja2 templates (server-rendered, no build step; kept in Python so the
package needs no data files). Autoescaping is on: every value from the register is escaped."""

from __future__ import annotations

import jinja2

__all__ = ["environment"]

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · computewatch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#212121;background:#fafafa}
nav{background:#263238;padding:8px 24px}nav a{color:#eceff1;margin-right:16px;text-decoration:none}
nav .who{float:right;color:#b0bec5}
main{max-width:1200px;margin:0 auto;padding:20px 24px}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ddd;margin-top:26px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f5f5f5}
code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.bar{background:#e0e0e0;border-radius:4px;height:14px;width:260px;display:inline-block;vertical-align:middle}
.bar span{display:block;height:14px;border-radius:4px;background:#1565c0}
.v-compliant{color:#2e7d32;font-weight:700}.v-violation{color:#c62828;font-weight:700}.v-inconclusive{color:#ef6c00;font-weight:700}
.finding,.refused{color:#c62828}.clean{color:#2e7d32}
figure{background:#fff;border:1px solid #e0e0e0;padding:8px;margin:10px 0}figure img{max-width:100%}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #e0e0e0;padding:10px 16px;min-width:140px}
.card b{font-size:22px;display:block}
.alert{background:#ffebee;border:1px solid #c62828;padding:4px 12px;margin:8px 0}
.s-violation{color:#c62828;font-weight:700}.s-awaiting-explanation{color:#ef6c00}.s-all-explained{color:#2e7d32}
</style></head><body>
<nav>{% if who %}<a href="/">Overview</a><a href="/chips">Chips</a><a href="/owners">Owners</a><a href="/plans">Inspections</a>
<a href="/queue">Explanation queue</a><a href="/jobs">Verdicts</a><a href="/regime">Regime</a>
<span class="who">{{ who.name }} ({{ who.role }}) · <a href="/logout">sign out</a></span>{% else %}<a href="/login">Sign in</a>{% endif %}</nav>
<main><h1>{{ title }}</h1>{% block body %}{% endblock %}</main></body></html>"""

_TEMPLATES = {
    "base.html": _BASE,
    "login.html": """{% extends "base.html" %}{% block body %}
<p>Paste a session token: <code>computewatch session --url URL --key YOUR.key</code> prints one (it signs
<code>POST /v1/sessions</code> with your registered key; docs/service.md).</p>
{% if message %}<p class="finding">{{ message }}</p>{% endif %}
<form method="post" action="/login"><input name="token" id="token" size="60" autocomplete="off"> <button type="submit">Sign in</button></form>
{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block body %}<p id="error">{{ status }}: {{ reason }}</p>{% endblock %}""",
    "index.html": """{% extends "base.html" %}{% block body %}
{% if findings %}<section id="findings" class="alert"><h2>Open findings ({{ findings|length }})</h2>
<table><thead><tr><th>finding</th><th>party</th><th>what</th><th>detail</th></tr></thead><tbody>
{% for f in findings %}<tr><td class="finding">{{ f.kind }}</td><td>{{ f.party }}</td><td>{{ f.subject }}</td><td>{{ f.detail }}</td></tr>{% endfor %}
</tbody></table></section>{% else %}<p id="findings" class="clean">No open findings.</p>{% endif %}
<h2>Provers</h2>
<table id="provers"><thead><tr><th>Prover</th><th>standing</th><th>snapshots unexplained</th><th>awaiting explanation</th><th>explained</th><th>latest verify job</th></tr></thead><tbody>
{% for p in provers %}<tr><td>{{ p.owner }}</td><td class="s-{{ p.state|replace(' ', '-') }}">{{ p.state }}</td><td>{{ p.unexplained }}</td><td>{{ p.pending }}</td><td>{{ p.explained }}</td>
<td>{% if p.job %}<a href="/jobs/{{ p.job.id }}">job {{ p.job.id }}</a>: <span class="v-{{ p.job.verdict }}">{{ p.job.verdict }}</span>{% else %}none{% endif %}</td></tr>
{% else %}<tr><td colspan="6">no Prover has logged snapshots to explain yet</td></tr>{% endfor %}</tbody></table>
<div class="cards">
<div class="card"><b id="n-unexplained" class="{{ 'finding' if counts.unexplained else 'clean' }}">{{ counts.unexplained }}</b>snapshots unexplained</div>
<div class="card"><b id="n-pending">{{ counts.pending }}</b>snapshots awaiting explanation</div>
<div class="card"><b id="n-chips">{{ counts.chips }}</b>chips</div>
<div class="card"><b id="n-entries">{{ counts.entries }}</b>log entries received</div>
<div class="card"><b>{{ counts.parties }}</b>parties</div>
<div class="card"><b>{{ counts.plans }}</b>plans</div>
<div class="card"><b>{{ counts.jobs }}</b>verify jobs</div>
</div>
<p>Register <code>{{ register }}</code>. Checkpoint key <code>{{ vkey }}</code>.</p>
{% endblock %}""",
    "chips.html": """{% extends "base.html" %}{% block body %}
<table id="chips"><thead><tr><th>serial</th><th>holder</th><th>status</th><th>model</th><th>exempt</th><th>log entries (service copy)</th></tr></thead><tbody>
{% for c in chips %}<tr><td><a href="/chips/{{ c.serial }}">{{ c.serial }}</a></td><td>{{ c.holder }}</td><td>{{ c.status }}</td>
<td>{{ c.model }}</td><td>{{ c.exempt or "" }}</td><td>{{ c.entries }}</td></tr>{% else %}<tr><td colspan="6">no chips</td></tr>{% endfor %}
</tbody></table>{% endblock %}""",
    "chip.html": """{% extends "base.html" %}{% block body %}
<table class="kv"><tr><th>holder</th><td id="holder">{{ chip.holder }}</td></tr><tr><th>status</th><td>{{ chip.status }}</td></tr>
<tr><th>responsible</th><td>{{ chip.responsible }}</td></tr><tr><th>model</th><td>{{ chip.model }}</td></tr>
<tr><th>device key</th><td class="mono">{{ chip.device_key }}</td></tr>
<tr><th>service log copy</th><td>{{ head.size }} entries, root <code>{{ head.root }}</code></td></tr></table>
<h2>Custody trail</h2>
<table id="custody"><thead><tr><th>seq</th><th>kind</th><th>from</th><th>to</th><th>facility</th><th>recorded</th><th>record digest</th></tr></thead><tbody>
{% for r in chip.custody %}<tr><td>{{ r.seq }}</td><td>{{ r.kind }}</td><td>{{ r["from"] }}</td><td>{{ r.to }}</td><td>{{ r.facility or "" }}</td>
<td>{{ r.recorded_at }}</td><td class="mono">{{ r.record_digest }}</td></tr>{% endfor %}</tbody></table>
<h2>Inspections</h2>
<table id="chip-inspections"><thead><tr><th>id</th><th>outcome</th><th>recorded</th><th>tree size</th></tr></thead><tbody>
{% for i in chip.inspections %}<tr><td>{{ i.id }}</td><td class="{{ i.outcome }}">{{ i.outcome }}</td><td>{{ i.recorded_at }}</td><td>{{ i.tree_size }}</td></tr>
{% else %}<tr><td colspan="4">none</td></tr>{% endfor %}</tbody></table>
<h2>Witnessed tree heads</h2>
<table><thead><tr><th>size</th><th>root</th><th>source</th><th>seen</th></tr></thead><tbody>
{% for h in chip.tree_heads %}<tr><td>{{ h.size }}</td><td class="mono">{{ h.root }}</td><td>{{ h.source }}</td><td>{{ h.seen_at }}</td></tr>
{% else %}<tr><td colspan="4">none</td></tr>{% endfor %}</tbody></table>{% endblock %}""",
    "owners.html": """{% extends "base.html" %}{% block body %}
<table id="owners"><thead><tr><th>name</th><th>role</th><th>keyid</th><th>chips held</th></tr></thead><tbody>
{% for p in parties %}<tr><td>{{ p.name }}</td><td>{{ p.role }}</td><td class="mono">{{ p.keyid }}</td><td>{{ held.get(p.name, 0) }}</td></tr>{% endfor %}
</tbody></table>{% endblock %}""",
    "plans.html": """{% extends "base.html" %}{% block body %}
<h2>Plans</h2>
<table id="plans"><thead><tr><th>id</th><th>period</th><th>stockpile</th><th>samples</th><th>detection probability</th><th>commitment</th><th>revealed</th></tr></thead><tbody>
{% for p in plans %}<tr><td>{{ p.plan }}</td><td>{{ p.period }}</td><td>{{ p.stockpile }}</td><td>{{ p.samples }}</td><td>{{ "%.4g"|format(p.detection_probability|float) if p.detection_probability is not none else "—" }}</td>
<td class="mono">{{ p.commitment }}</td><td>{{ "yes" if p.revealed else "no" }}</td></tr>{% else %}<tr><td colspan="7">no plans</td></tr>{% endfor %}</tbody></table>
<h2>Inspection outcomes</h2>
<table id="inspections"><thead><tr><th>id</th><th>chip</th><th>plan</th><th>outcome</th><th>problems</th><th>recorded</th></tr></thead><tbody>
{% for i in inspections %}<tr><td>{{ i.id }}</td><td><a href="/chips/{{ i.serial }}">{{ i.serial }}</a></td><td>{{ i.plan }}</td><td class="{{ i.outcome }}">{{ i.outcome }}</td>
<td>{% for pr in i.problems or [] %}{{ pr.check }}: {{ pr.problem }}<br>{% endfor %}</td><td>{{ i.recorded_at }}</td></tr>
{% else %}<tr><td colspan="6">no inspections</td></tr>{% endfor %}</tbody></table>{% endblock %}""",
    "queue.html": """{% extends "base.html" %}{% block body %}
<table id="queue"><thead><tr><th>chip</th><th>entry</th><th>step</th><th>shard digest</th><th>owner</th><th>status</th><th>answer</th><th>verdict</th></tr></thead><tbody>
{% for q in queue %}<tr><td>{{ q.serial }}</td><td>{{ q.counter }}</td><td>{{ q.step }}</td><td class="mono">{{ q.shard_digest }}</td><td>{{ q.owner }}</td>
<td>{{ q.status }}</td><td>{% if q.answer %}run {{ q.answer.run_id }}{% endif %}</td><td>{{ q.verdict_ref or "" }}</td></tr>
{% else %}<tr><td colspan="8">the queue is empty</td></tr>{% endfor %}</tbody></table>{% endblock %}""",
    "jobs.html": """{% extends "base.html" %}{% block body %}
<table id="jobs"><thead><tr><th>job</th><th>owner</th><th>status</th><th>progress</th><th>verdict</th><th>created</th></tr></thead><tbody>
{% for j in jobs %}<tr><td><a href="/jobs/{{ j.id }}">{{ j.id }}</a></td><td>{{ j.owner }}</td><td>{{ j.status }}</td>
<td><span class="bar"><span style="width:{{ (j.progress.fraction * 100)|round|int }}%"></span></span> {{ j.progress.stage }}</td>
<td class="v-{{ j.verdict }}">{{ j.verdict or "" }}</td><td>{{ j.created_at }}</td></tr>{% else %}<tr><td colspan="6">no jobs</td></tr>{% endfor %}
</tbody></table>{% endblock %}""",
    "job.html": """{% extends "base.html" %}{% block body %}
<p>Status: <b id="status">{{ job.status }}</b> · <span class="bar"><span id="bar" style="width:{{ (job.progress.fraction * 100)|round|int }}%"></span></span>
<span id="stage">{{ job.progress.stage }} {{ job.progress.done }}/{{ job.progress.total }}</span></p>
{% if job.error %}<p class="finding" id="job-error">{{ job.error }}</p>{% endif %}
{% if verdict %}
<p>Verdict: <span id="verdict" class="v-{{ verdict.verdict }}">{{ verdict.verdict }}</span> · <a href="/v1/jobs/{{ job.id }}/report">full report</a> · <a href="/v1/jobs/{{ job.id }}/verdict">JSON</a></p>
<h2>Checks</h2>
<table id="checks"><thead><tr><th>check</th><th>passed</th><th>detail</th></tr></thead><tbody>
{% for c in verdict.checks or [] %}<tr><td>{{ c.name }}</td><td class="{{ 'clean' if c.passed is true else 'finding' if c.passed is false else '' }}">{{ "pass" if c.passed is true else "FAIL" if c.passed is false else "not decided" }}</td><td>{{ c.detail }}</td></tr>{% endfor %}</tbody></table>
<h2>Figures</h2>
{% for name in figures %}<figure><img class="plot" alt="{{ name }}" src="/v1/jobs/{{ job.id }}/figures/{{ name }}.png"><figcaption>{{ name }}</figcaption></figure>{% endfor %}
{% endif %}
{% if job.status in ("queued", "running") %}<script src="/static/job.js" data-job="{{ job.id }}"></script>{% endif %}
{% endblock %}""",
    "regime.html": """{% extends "base.html" %}{% block body %}
<p>Registered stockpile in service: <b id="stockpile">{{ r.stockpile }}</b> chips; a = {{ "%.3g"|format(r.chip_flops_per_day) }} FLOP per chip-day.</p>
<h2>Eq. 1: chips to inspect per period (f = 0.1/day, T = T<sub>m</sub> = 30 days, p = 0.9)</h2>
<table id="eq1"><thead><tr><th>run</th><th>H (FLOP)</th><th>samples per period</th><th>detection probability</th><th>feasible</th><th>reason</th></tr></thead><tbody>
{% for e in r.eq1 %}<tr><td>{{ e.run }}</td><td>{{ "%.3g"|format(e.H) }}</td><td>{{ e.samples_per_period if e.samples_per_period is not none else "—" }}</td>
<td>{{ "%.4f"|format(e.detection_probability) if e.detection_probability is not none else "—" }}</td><td>{{ "yes" if e.feasible else "no" }}</td><td>{{ e.reason or "" }}</td></tr>{% endfor %}</tbody></table>
<h2>Achieved so far</h2>
<table id="achieved"><thead><tr><th>plan</th><th>period</th><th>samples</th><th>inspected</th><th>planned p</th><th>achieved p</th></tr></thead><tbody>
{% for p in r.plans %}<tr><td>{{ p.id }}</td><td>{{ p.period }}</td><td>{{ p.samples }}</td><td>{{ p.inspected }}</td><td>{{ p.planned_probability }}</td>
<td>{{ "%.4f"|format(p.achieved_probability) if p.achieved_probability is not none else "—" }}</td></tr>{% else %}<tr><td colspan="6">no plans</td></tr>{% endfor %}
</tbody></table>{% endblock %}""",
}


def _finalize(value: object) -> object:
    return "—" if value is None else value  # a missing value reads as a dash, never "None"


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.DictLoader(_TEMPLATES), autoescape=True, finalize=_finalize)
