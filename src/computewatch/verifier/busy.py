"""Busy time against the transcript: what a chip's own clock says it computed for a run.

A chip meters busy time on its secure clock (chip/busy.py) and logs it with every entry; the
Verifier attributes it to runs (`evidence.ChipEvidence.busy_by_run`: from a run's precommitment
to the next precommitment or the end of the boot). Two findings:

* `snapshots`: a chip is a rank of a run with steps, logged that run's precommitment, and shows
  no busy time under it. Snapshots fire in busy time, so a chip that computed "for nothing" could
  not be sampled at all: the run left no trace the inspection could find.
* `compute`: the busy time under a run far exceeds what its transcript explains: more than
  `BUSY_SLACK` times the transcript's steps times the busy time of one step, as the chip itself
  measured it for the steps its snapshots fell in (each snapshot entry logs the busy time at
  the start and the end of its step). A chip that trained 120 steps beside a 40-step transcript
  shows three times the busy time its 40 steps explain. Without a snapshot under the run there
  is no per-step measure and the comparison is not made (the report says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from computewatch.verifier.evidence import ChipEvidence

__all__ = ["BUSY_SLACK", "busy_findings"]

# Steps of one run differ in length (checkpoint writes, stalls, data loading): allow half as
# much busy time again as the transcript's steps explain, plus one step.
BUSY_SLACK = 1.5


def _step_busy(chip: ChipEvidence, run_id: str) -> list[int]:
    """Busy ns of the single steps the chip's snapshots under `run_id` fell in."""
    counters = {s.counter for s in chip.snapshots if s.run_id == run_id}
    out = []
    for e in chip.entries:
        if e.kind == "snapshot" and e.counter in counters:
            start = e.body.get("step_start_busy_ns")
            if isinstance(start, str) and start.isdigit() and e.busy_ns >= int(start):
                out.append(e.busy_ns - int(start))
    return out


def busy_findings(chips: Sequence[ChipEvidence], runs: Mapping[str, Mapping[str, Any]]) -> tuple[list[tuple[str, str]], list[str]]:
    """((check, finding) pairs, notes) for every inspected chip of every submitted run."""
    findings: list[tuple[str, str]] = []
    notes: list[str] = []
    for chip in chips:
        logged = {p.run_id for p in chip.precommitments}
        for rid, run in runs.items():
            steps = int(run.get("steps") or 0)
            if chip.serial not in run.get("chips", []) or rid not in logged or steps == 0:
                continue
            busy = chip.busy_by_run.get(rid, 0)
            if busy == 0:
                findings.append(("snapshots", f"{chip.serial}: logged run {rid}'s precommitment and shows no busy time under it, though the transcript records {steps} steps: no snapshot could ever fire"))
                continue
            per_step = _step_busy(chip, rid)
            if not per_step:
                notes.append(f"{chip.serial}: {busy / 1e9:.0f} busy-seconds under run {rid}; no snapshot measured a step, so the busy time was not compared with the transcript")
                continue
            step_ns = max(per_step)
            explained = steps * step_ns
            if busy > BUSY_SLACK * explained + step_ns:
                findings.append(("compute", f"{chip.serial}: {busy / 1e9:.0f} busy-seconds under run {rid}, but its {steps} steps at the {step_ns / 1e9:.0f} s per step the chip measured explain {explained / 1e9:.0f} s: {busy / explained:.1f} times the transcript's compute"))
            else:
                notes.append(f"{chip.serial}: {busy / 1e9:.0f} busy-seconds under run {rid}, {busy / explained:.2f} x what its {steps} steps explain")
    return findings, notes
