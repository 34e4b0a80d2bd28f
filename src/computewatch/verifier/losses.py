"""No `loss` check passes on nothing: a step whose recorded loss is null or missing is a finding.

The replay compares the losses a transcript records with the replayed ones, but a null loss
(the step format's "not finite") used to be skipped, so a transcript that recorded every loss
as null made the `loss` check pass with nothing compared, and left policy rules on the loss
nothing to read. A null loss is excused only where the Verifier's own replay of that step also
gave a non-finite loss (a run that really diverged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["loss_findings", "run_loss_findings"]


def _steps(series: Sequence[Sequence[Any]]) -> str:
    steps = [int(row[0]) for row in series]
    text = ", ".join(map(str, steps[:8]))
    return text + (f" and {len(steps) - 8} more" if len(steps) > 8 else "")


def loss_findings(run_id: str, recorded: Sequence[Sequence[Any]], steps: int, replayed: Sequence[Sequence[Any]]) -> list[str]:
    """Findings for one run: `recorded` is the transcript's [[step, loss | None]] (the
    inventory's), `steps` the number of step records, `replayed` the replay's [[step, loss | None]]."""
    out = []
    have = {int(row[0]) for row in recorded}
    missing = [[t] for t in range(steps) if t not in have]
    if missing:
        out.append(f"run {run_id}: no loss recorded for steps {_steps(missing)}")
    diverged = {int(t) for t, loss in replayed if loss is None}
    null = [row for row in recorded if row[1] is None and int(row[0]) not in diverged]
    if null:
        out.append(f"run {run_id}: {len(null)} of {steps} steps record a null loss (steps {_steps(null)}), so the replay had nothing to compare them with")
    return out


def run_loss_findings(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """`loss_findings` over every inventoried run (replayed losses from its judged segments)."""
    out = []
    for rid, run in runs.items():
        replayed = [row for _seg, res in run.get("segments", []) for row in res.get("losses", [])]
        out += loss_findings(rid, run.get("loss", []), int(run.get("steps", 0)), replayed)
    return out
