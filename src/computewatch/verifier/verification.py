"""The Verifier: from inspected chips' logs and the Provers' transcripts to a verdict.

Order of work (paper §3, §5.1-5.2, Appendix D):
1. `chip-logs`: read every inspected chip (certificate under a pinned chipmaker root, full log
   audit, tree heads seen earlier) and list what its log says: precommitments, memory maps,
   snapshots, busy time.
2. The trusted cluster makes an inventory of every submitted run (manifest under the pinned
   Prover key; digests only leave the cluster).
3. `precommitment`, `snapshots` (mapping): every logged snapshot must map to one submitted run,
   one rank and one transcript record; every precommitment a chip logged must belong to a
   submitted run with the same digest, before the run's first snapshot.
4. Segment selection (after the Prover committed), then the cluster replays the segments
   (`segments`, `snapshots`, `loss`, `compute`) and audits each run (`init`, `data`,
   `hyperparameters`, `memorization`, `rules`).
5. The verdict: any failed check is a violation; a check that could not be decided (exact
   replay on a different machine, a policy predicate that failed to evaluate) is inconclusive.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import VerifyKey
from computewatch.verifier import _audit, _examine
from computewatch.verifier._run import StagedRun, staged_run
from computewatch.verifier.binding import RunBinding, binding_findings, sole_prover
from computewatch.verifier.busy import busy_findings
from computewatch.verifier.cluster import TrustedCluster, WarmPool
from computewatch.verifier.evidence import ChipEvidence, EvidenceError, find_chip_dirs, read_chip
from computewatch.verifier.losses import run_loss_findings
from computewatch.verifier.measured import EFFICIENCY, OVERHEAD_S, measurable, measured_flops
from computewatch.verifier.protocol import CheckOutcome, Status
from computewatch.verifier.selection import DEFAULT_SEGMENT_DETECTION, Segment, seed_commitment, select_segments, selection_summary
from computewatch.verifier.tolerance import bound_tolerance, tolerance_findings
from computewatch.verifier.spot_checks import verify_hook

__all__ = ["CHECKS", "VerifyRequest", "verify"]

CHECKS = ("chip-logs", "precommitment", "snapshots", "init", "data", "hyperparameters", "segments", "steps", "memorization", "loss", "compute", "rules")
ADVISORY = ("memorization",)  # never decides a verdict (docs/verifier.md)
_MEMORIZATION_SEGMENTS = 4
_CALIBRATION_THREADS = (1, 2, 3)

Progress = Callable[[str, int, int], None]


@dataclass
class VerifyRequest:
    runs: Sequence[str | os.PathLike[str]]
    chips: Sequence[str | os.PathLike[str]]
    chipmaker_roots: Sequence[VerifyKey]
    prover_keys: Sequence[VerifyKey]
    seed: bytes
    known_heads: Mapping[str, Sequence[tuple[int, bytes]]] = field(default_factory=dict)
    policy_text: str | None = None  # the policy file's bytes, decoded as UTF-8
    mode: str = "exact"
    segments: int | str | None = None  # random segments besides snapshot and top-Q ones, "all", or None: from detection_target
    detection_target: float = DEFAULT_SEGMENT_DETECTION  # one-segment forgery detection the default draw reaches
    threads: int | None = None  # tolerance mode: replay with this many threads
    ray_address: str | None = None
    workers: int = 1
    sandbox: bool = True  # False: --unsafe-no-sandbox (the Prover's program runs unconfined)
    in_process: bool = False  # tests of the check logic: the same as sandbox=False
    isolate: bool = True  # kept for callers of the previous interface; sandbox decides
    data_dirs: Mapping[str, str] = field(default_factory=dict)  # run id -> the Prover's raw data folder
    time_scale: float = 1.0  # multiplies every executor time limit (tests of the limits use less)
    held_runs: Sequence[RunBinding] = ()  # (Prover key, run id, precommitment) the Verifier holds, e.g. from the register
    responses: Sequence[str | os.PathLike[str]] = ()  # step-challenge response folders (issue 19)
    now_ns: int | None = None  # the judge's clock for response deadlines (default: now)
    warm: WarmPool | None = None  # executors started ahead (cluster.WarmPool; the caller closes it); not used on Ray


class _Checks:
    """Typed outcomes per check: failed if any finding failed it, else undecided if any was
    undecided, else passed if any passed, else not run."""

    def __init__(self) -> None:
        self.items: dict[str, list[tuple[Status, str]]] = defaultdict(list)

    def add(self, name: str, status: Status, detail: str) -> None:
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}")
        self.items[name].append((status, detail))

    def bad(self, name: str, detail: str) -> None:
        self.add(name, Status.FAILED, detail)

    def unsure(self, name: str, detail: str) -> None:
        self.add(name, Status.UNDECIDED, detail)

    def good(self, name: str, detail: str) -> None:
        self.add(name, Status.PASSED, detail)

    def outcomes(self) -> list[CheckOutcome]:
        out = []
        for name in CHECKS:
            entries = self.items[name]
            status = next((s for s in (Status.FAILED, Status.UNDECIDED, Status.PASSED, Status.NOT_RUN) if any(e[0] is s for e in entries)), Status.NOT_RUN)
            details = [d for s, d in entries if s is status] or ["not run: nothing to check"]
            text = "; ".join(_short(d) for d in details[:6]) + (f"; and {len(details) - 6} more" if len(details) > 6 else "")
            out.append(CheckOutcome(name, status, text))
        return out


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify(request: VerifyRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Verify the runs against the inspected chips; returns the verdict document
    (docs/verifier.md). Raises EvidenceError / ValueError for unusable input, ClusterError when
    no sandbox can be made and `sandbox` was not turned off."""
    if request.mode not in ("exact", "tolerance"):
        raise ValueError(f"mode must be exact or tolerance, got {request.mode!r}")
    report = progress or (lambda what, done, total: None)
    checks = _Checks()
    chips = _read_chips(request, checks)
    _check_chip_logs(chips, checks)
    cluster = TrustedCluster(workers=request.workers, ray_address=request.ray_address, sandbox=request.sandbox and not request.in_process,
                             warm=request.warm)
    with ExitStack() as stack:
        runs, staged = _inventory(request, checks, stack, report)
        for finding in binding_findings(runs, request.policy_text, request.held_runs):
            checks.bad("precommitment", finding)
        expectations = _map_chips_to_runs(chips, runs, checks)
        selections = _select(runs, expectations, request)
        tolerance = _calibrate(cluster, runs, staged, selections, expectations, request, report) if request.mode == "tolerance" else None
        if tolerance is not None:
            tolerance = bound_tolerance(tolerance)
            for finding in tolerance_findings(tolerance):
                checks.bad("segments", finding)
        plans = [_plan(staged[rid], runs[rid], selections[rid], expectations[rid], request, tolerance, cluster) for rid in runs]
        results = cluster.map(_examine.examine, plans, lambda d, t: report("replay", d, t))
        for rid, res in zip(runs, results, strict=False):
            _absorb_expectations(expectations[rid], res.expectations)
            _absorb(runs[rid], res, checks)
        _judge_unreplayed_snapshots(expectations, checks)
        for finding in run_loss_findings(runs):
            checks.bad("loss", finding)
        _judge_compute(runs, staged, chips, checks)
        busy_bad, busy_notes = busy_findings(chips, runs)
        for check, finding in busy_bad:
            checks.bad(check, finding)
        for note in busy_notes:
            checks.good("compute", note)
        rules = _judge_rules(runs, staged, results, request, checks)
        step_evidence = verify_hook(request, runs, staged, checks, tolerance, sandbox=cluster.sandbox)  # step commitments and challenges (issue 19)
    outcomes = checks.outcomes()
    logged = sum(len(c.snapshots) for c in chips)
    explained = sum(1 for rid in expectations for e in expectations[rid] if e.get("explained"))
    total = [runs[r].get("total_flops") for r in runs]
    return {
        "verdict": _verdict(outcomes),
        "checks": [o.to_json() for o in outcomes],
        "total_flops": sum(t for t in total if t is not None) if runs and all(t is not None for t in total) else None,
        "verification_flops": sum(r.get("verification_flops", 0) for r in runs.values()) if runs else None,
        "snapshots": {"logged": logged, "explained": explained},
        "mode": request.mode,
        "isolation": cluster.isolation,
        "selection": {
            "seed_commitment": seed_commitment(request.seed),
            "seed": request.seed.hex(),
            "segments_total": sum(max(0, len(r.get("checkpoint_steps", [])) - 1) for r in runs.values()),
            "segments_replayed": sum(len(selections.get(r, [])) for r in runs),
            "detection_target": request.detection_target if request.segments is None else None,
            "forgery_detection": {r: selection_summary(selections.get(r, []), runs[r].get("checkpoint_steps", [])) for r in runs},
        },
        "tolerance": tolerance,
        **step_evidence,
        "policy": _policy_info(request),
        "rules": rules,
        "runs": [_run_doc(runs[r], selections.get(r, []), expectations.get(r, [])) for r in runs],
        "chips": [{"serial": c.serial, "entries": c.audit.entries, "snapshots": len(c.snapshots), "ok": c.audit.ok, "root": c.audit.root} for c in chips],
        "unexplained_snapshots": _unexplained(chips, runs, expectations),
    }


def _unexplained(chips: list[ChipEvidence], runs: dict[str, dict[str, Any]], expectations: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every logged snapshot no transcript explained, also those of runs never handed over
    (the report lists them all: they are the violation people must see)."""
    done = {(e["chip"], e["counter"]): e for rid in expectations for e in expectations[rid]}
    out = []
    for c in chips:
        for s in c.snapshots:
            e = done.get((c.serial, s.counter))
            if e is not None and e.get("explained"):
                continue
            why = ("belongs to no declared run" if s.run_id is None else
                   f"run {s.run_id}'s transcript was withheld" if s.run_id not in runs else (e or {}).get("detail") or "not reproduced")
            out.append({"chip": c.serial, "counter": s.counter, "step": s.step, "run_id": s.run_id,
                        "clock_ns": str(s.clock_ns), "busy_ns": str(s.busy_ns), "detail": why})
    return out


def _verdict(outcomes: Sequence[CheckOutcome]) -> str:
    if any(o.status is Status.FAILED for o in outcomes):
        return "violation"
    if any(o.status is Status.UNDECIDED for o in outcomes if o.name not in ADVISORY):
        return "inconclusive"
    return "compliant"


def _inventory(request: VerifyRequest, checks: _Checks, stack: ExitStack, report: Progress) -> tuple[dict[str, dict[str, Any]], dict[str, StagedRun]]:
    """Stage every run into the judge's private storage (re-hashed, regular files only) and take
    its inventory; a run that cannot be staged is a precommitment finding."""
    runs: dict[str, dict[str, Any]] = {}
    staged: dict[str, StagedRun] = {}
    dirs = [str(Path(r).resolve()) for r in request.runs]
    for i, run_dir in enumerate(dirs, 1):
        report("inventory", i - 1, len(dirs))
        try:
            run = stack.enter_context(staged_run(run_dir, request.prover_keys, checkpoints="all", snapshot_objects=False))
            inv = _audit.inventory(run, request.prover_keys)
            run.stager = None  # from here on only the judge's private copy is read
        except ComputewatchError as exc:
            checks.bad("precommitment", f"{run_dir}: the transcript is not authentic or not readable: {exc}")
            continue
        if inv["run_id"] in runs:
            checks.bad("precommitment", f"run {inv['run_id']} submitted twice ({runs[inv['run_id']]['run_dir']} and {run_dir})")
            continue
        inv["run_dir"] = run_dir
        runs[inv["run_id"]] = inv
        staged[inv["run_id"]] = run
        for check, problem in inv["problems"]:
            checks.bad(check, f"run {inv['run_id']}: {problem}")
    report("inventory", len(dirs), len(dirs))
    return runs, staged


# ----------------------------------------------------------------------------------- chip logs
def _read_chips(request: VerifyRequest, checks: _Checks) -> list[ChipEvidence]:
    """The inspected chips' evidence. A folder the Verifier named that holds no chip is its own
    unusable input (EvidenceError); a chip whose certificate is garbled, from a chipmaker the
    Verifier did not pin, or whose files are unreadable is the chip owner's failing evidence."""
    chips = []
    for path in find_chip_dirs(request.chips):
        try:
            chips.append(read_chip(path, request.chipmaker_roots, request.known_heads))
        except EvidenceError as exc:
            checks.bad("chip-logs", f"{path.name}: the chip's evidence is not usable: {exc}")
    return chips


def _check_chip_logs(chips: list[ChipEvidence], checks: _Checks) -> None:
    if not chips:
        checks.bad("chip-logs", "no inspected chip: a verdict needs chip evidence to start from")
    for c in chips:
        if c.audit.ok:
            checks.good("chip-logs", f"{c.serial}: {c.audit.entries} entries audit clean")
        for p in c.audit.problems:
            where = f"entry {p.entry}" if p.entry is not None else "log"
            checks.bad("chip-logs", f"{c.serial} {where}: {p.problem}")


# --------------------------------------------------------------------------- mapping and runs
def _map_chips_to_runs(chips: list[ChipEvidence], runs: dict[str, dict[str, Any]], checks: _Checks) -> dict[str, list[dict[str, Any]]]:
    """Every logged snapshot to (run, rank, record); every logged precommitment to a run."""
    expectations: dict[str, list[dict[str, Any]]] = {rid: [] for rid in runs}
    for c in chips:
        for boot, busy in c.busy_before_precommitment:
            checks.bad("precommitment", f"{c.serial} boot {boot}: {busy / 1e9:.0f} busy-seconds of compute before any precommitment")
        for pre in c.precommitments:
            run = runs.get(pre.run_id)
            if run is None:
                checks.bad("precommitment", f"{c.serial} entry {pre.counter}: precommitment of run {pre.run_id!r}, whose transcript was not submitted")
            elif pre.digest != run["precommitment_digest"]:
                checks.bad("precommitment", f"{c.serial} entry {pre.counter}: logged precommitment digest differs from run {pre.run_id}'s manifest")
        seen_runs = {p.run_id for p in c.precommitments}
        for rid, run in runs.items():
            ranks = [r for r, chip in enumerate(run["chips"]) if chip == c.serial]
            if ranks and rid not in seen_runs:
                checks.bad("precommitment", f"{c.serial} is rank {ranks[0]} of run {rid} but never logged its precommitment")
            if rid in seen_runs and not ranks:
                checks.bad("precommitment", f"{c.serial} logged run {rid}'s precommitment but the manifest does not list it")
            for m in (m for m in c.memory_maps if m.run_id == rid):
                if m.digest not in run["memory_maps"]:
                    checks.bad("precommitment", f"{c.serial} entry {m.counter}: memory map matches no rank of run {rid}'s layout")
                elif ranks and run["memory_maps"].index(m.digest) not in ranks:
                    checks.bad("precommitment", f"{c.serial} entry {m.counter}: memory map of another rank than the manifest gives it in run {rid}")
        for s in c.snapshots:
            where = f"{c.serial} snapshot entry {s.counter} (step {s.step})"
            if s.run_id is None:
                later = any(p.boot == s.boot and p.counter > s.counter for p in c.precommitments)
                why = "the boot's precommitment was logged after this snapshot" if later else "its boot logged no precommitment"
                checks.bad("precommitment", f"{where}: {why}")
                checks.bad("snapshots", f"{where}: belongs to no declared run")
                continue
            run = runs.get(s.run_id)
            if run is None:
                checks.bad("snapshots", f"{where}: unexplained, run {s.run_id!r}'s transcript was withheld")
                continue
            if s.memory_map_digest is None or s.memory_map_digest not in run["memory_maps"]:
                checks.bad("precommitment", f"{where}: no memory map of run {s.run_id} logged before it")
                checks.bad("snapshots", f"{where}: cannot tell which shard of run {s.run_id} it holds")
                continue
            rank = run["memory_maps"].index(s.memory_map_digest)
            records = [r for r in run["snapshot_records"] if r["chip_id"] == c.serial and r["counter"] == s.counter]
            exp = {"chip": c.serial, "counter": s.counter, "step": s.step, "rank": rank, "digest": s.shard_digest,
                   "clock_ns": str(s.clock_ns), "busy_ns": str(s.busy_ns), "object": None, "explained": False, "detail": ""}
            if not records:
                checks.bad("snapshots", f"{where}: the transcript has no record of it")
                exp["detail"] = "no transcript record"
            elif len(records) > 1:
                checks.bad("snapshots", f"{where}: the transcript records it {len(records)} times (duplicated records)")
                exp["detail"] = "duplicated record"
            else:
                rec = records[0]
                wrong = [k for k, v in (("step", s.step), ("shard_digest", s.shard_digest), ("rank", rank)) if rec[k] != v]
                if wrong:
                    checks.bad("snapshots", f"{where}: its transcript record has another {', '.join(wrong)} (redirected record)")
                    exp["detail"] = "record disagrees with the log"
                elif not rec["copy_out_ok"]:
                    checks.bad("snapshots", f"{where}: the copy-out does not hash to the logged digest: {rec['copy_out_detail']}")
                    exp["detail"] = "copy-out does not match"
                else:
                    exp["object"] = rec["object"]
            expectations[s.run_id].append(exp)
        for rid, run in runs.items():
            if rid in seen_runs and c.serial in run["chips"]:
                checks.good("precommitment", f"{c.serial} logged run {rid}'s precommitment and its rank's memory map")
        logged = {(s.serial, s.counter) for s in c.snapshots}
        for rid, run in runs.items():
            for rec in run["snapshot_records"]:
                if rec["chip_id"] == c.serial and (c.serial, rec["counter"]) not in logged:
                    checks.bad("snapshots", f"run {rid}: record of {c.serial} snapshot {rec['counter']}, which the chip never logged (invented or redirected)")
    return expectations


def _select(runs: dict[str, dict[str, Any]], expectations: dict[str, list[dict[str, Any]]], request: VerifyRequest) -> dict[str, list[Segment]]:
    out = {}
    for rid, run in runs.items():
        steps = [e["step"] for e in expectations[rid] if e["object"] is not None]
        out[rid] = select_segments(rid, run["checkpoint_steps"], steps, run["update_norms"], request.seed, count=request.segments, detection_target=request.detection_target)
    return out


def _plan(run: StagedRun, inv: dict[str, Any], segs: list[Segment], expectations: list[dict[str, Any]], request: VerifyRequest,
          tolerance: dict[str, Any] | None, cluster: TrustedCluster) -> _examine.RunPlan:
    data = request.data_dirs.get(inv["run_id"])
    return _examine.RunPlan(
        run=run, inv=inv, segments=segs, expectations=expectations, mode=request.mode, threads=request.threads,
        seed_hex=request.seed.hex(), data_dir=str(Path(data).resolve()) if data else None, policy_text=request.policy_text,
        epsilon=tolerance["epsilon"] if tolerance else None, sandbox=cluster.sandbox, time_scale=request.time_scale,
        memorization=[[s.start, s.end] for s in segs if s.end is not None][:_MEMORIZATION_SEGMENTS],
        executors=cluster.executors_per_run(len(request.runs)), warm=cluster.warm,
    )


def _absorb_expectations(mine: list[dict[str, Any]], examined: list[dict[str, Any]]) -> None:
    """What the examination found about each expected snapshot (explained, detail). Locally
    these are the same objects; a Ray task examined copies, which come back in its result."""
    if examined is mine:
        return
    if len(examined) != len(mine):
        raise RuntimeError("the examination handed back a different list of expected snapshots")
    for e, got in zip(mine, examined, strict=True):
        e["explained"], e["detail"] = got.get("explained", e.get("explained")), got.get("detail", e.get("detail"))


def _absorb(run: dict[str, Any], res: _examine.RunResult, checks: _Checks) -> None:
    for f in res.findings:
        checks.add(f.check, f.status, f.detail)
    run["segments"] = res.segments
    run["expected_lr"] = res.expected_lr
    run["flops_claims"] = res.flops_claims
    run["counted_steps"] = res.counted_steps
    run["measured_jobs"] = res.measured
    run["reference_rate"] = res.reference_rate
    run["unknown_ops"] = res.unknown_ops
    run["replayed_steps"] = res.replayed_steps
    run["executors"] = res.executors
    run["policy_facts"] = res.policy_facts
    memo = res.memorization
    run["memorization"] = memo
    if memo:
        text = f"run {run['run_id']}: z = {memo['statistic']:.2f} over {memo['segments']} segment(s), p = {memo['p_value']:.3g}"
        if memo["p_value"] < 0.05:
            checks.good("memorization", text + ": trained samples' loss dropped more than held-out samples'")
        else:
            checks.unsure("memorization", text + ": no significant memorization signal (advisory; short segments have little power)")


def _judge_unreplayed_snapshots(expectations: dict[str, list[dict[str, Any]]], checks: _Checks) -> None:
    explained = sum(1 for rid in expectations for e in expectations[rid] if e["explained"])
    total = sum(len(v) for v in expectations.values())
    for rid in expectations:
        for e in expectations[rid]:
            if e["object"] is not None and not e["explained"] and not e["detail"]:
                checks.bad("snapshots", f"{e['chip']} snapshot {e['counter']} (step {e['step']}): no checkpoint segment of run {rid} covers it")
                e["detail"] = "no segment covers it"
    if total and explained == total:
        checks.good("snapshots", f"all {total} logged snapshots map to a run, a rank and a record, and replay reproduces them")


def _measured_total(run: dict[str, Any]) -> float | None:
    """The run's FLOPs as the executor's measured CPU time stands for them, per replayed step
    times the run's steps (`verifier.measured`); None when nothing was measured."""
    jobs, rate = [j for j in run.get("measured_jobs") or [] if measurable(j)], run.get("reference_rate")
    if not jobs or not rate:
        return None
    flops, steps = measured_flops(jobs, rate)
    return flops / steps * run["steps"] if steps else None


def _measured_doc(run: dict[str, Any], total: float | None) -> dict[str, Any]:
    jobs = [j for j in run.get("measured_jobs") or [] if measurable(j)]
    return {"flops": total, "cpu_seconds": sum(j.cpu_seconds for j in jobs), "replayed_steps": sum(j.steps for j in jobs),
            "reference_flops_per_cpu_second": run.get("reference_rate"), "efficiency": EFFICIENCY, "overhead_s_per_step": OVERHEAD_S,
            "unmeasured_jobs": len(run.get("measured_jobs") or []) - len(jobs)}


def _judge_compute(runs: dict[str, dict[str, Any]], staged: dict[str, StagedRun], chips: list[ChipEvidence], checks: _Checks) -> None:
    """Compute the judge can stand behind: its own 6·N·D estimate is the floor of the reported
    total, the executor's count (a claim) can only raise it, and an executor count far below the
    estimate is a finding; the chips' busy time times their certified peak is the ceiling."""
    by_serial = {c.serial: c for c in chips}
    for rid, run in runs.items():
        try:
            steps = staged[rid].steps()
        except ComputewatchError:
            checks.bad("compute", f"run {rid}: the step records cannot be read, so the committed samples cannot be counted")
            continue
        params, estimate = _examine.judge_estimate(staged[rid], steps)
        claims, counted = run.get("flops_claims") or [], run.get("counted_steps") or 0
        claim_total = round(sum(claims) / counted * run["steps"]) if claims and counted else None
        measured_total = _measured_total(run)
        total = max(estimate, claim_total or 0, round(measured_total or 0))
        run["judge_flops"] = estimate
        run["executor_flops"] = claim_total
        run["measured_flops"] = measured_total
        run["total_flops"] = total
        run["flops_per_step"] = total / run["steps"] if run["steps"] else None
        run["verification_flops"] = round(total / run["steps"] * run.get("replayed_steps", 0)) if run["steps"] else 0
        inspected = [by_serial[s] for s in run["chips"] if s in by_serial]
        busy_s = sum(c.busy_by_run.get(rid, 0) for c in inspected) / 1e9
        capacity = sum(c.busy_by_run.get(rid, 0) / 1e9 * c.peak_flops for c in inspected)
        if inspected and len(inspected) < run["world_size"]:
            capacity *= run["world_size"] / len(inspected)  # the uninspected chips' share, assumed alike
        utilization = total / capacity if capacity > 0 else None
        run["compute"] = {"busy_seconds": busy_s, "peak_flops_seconds": capacity, "utilization": utilization,
                          "judge_estimate": estimate, "executor_count": claim_total, "parameters": params,
                          "measured": _measured_doc(run, measured_total)}
        detail = f"run {rid}: {total:.3e} FLOPs (judge's estimate 6 x {params} parameters x {sum(len(r.sample_ids) for r in steps)} committed samples = {estimate:.3e}"
        detail += f"; executor's count {claim_total:.3e}" if claim_total is not None else "; no segment replayed, so no executor count"
        detail += f"; measured from the executor's CPU time {measured_total:.3e})" if measured_total is not None else ")"
        unknown = run.get("unknown_ops") or {}
        if unknown:
            detail += f"; NOT counted by the executor (unknown to the counter): {', '.join(f'{k} x{v}' for k, v in sorted(unknown.items()))}"
            run["flops_complete"] = False
        if claim_total is not None and claim_total < _examine._FAR_BELOW * estimate:
            checks.bad("compute", detail + ": the executor's count is far below the judge's estimate (a program that under-counts itself)")
            continue
        if claim_total is not None and measured_total is not None and claim_total < _examine._FAR_BELOW * measured_total:
            checks.bad("compute", detail + ": the executor's count is far below the compute its CPU time measures (work hidden from the counter)")
            continue
        if utilization is not None:
            detail += f"; {utilization:.2e} of the inspected chips' certified peak over their logged busy time"
            if utilization > 1.0:
                checks.bad("compute", detail + ": more compute than the chips could deliver")
                continue
        checks.good("compute", detail)


def _judge_rules(runs: dict[str, dict[str, Any]], staged: dict[str, StagedRun], results: list[_examine.RunResult], request: VerifyRequest, checks: _Checks) -> list[dict[str, Any]]:
    if request.policy_text is None:
        checks.add("rules", Status.NOT_RUN, "not run: no policy given (--policy), so no rule was applied")
        return []
    outcomes: list[dict[str, Any]] = []
    for rid, run in runs.items():
        facts = run.get("policy_facts") or {}
        try:
            steps = staged[rid].steps()
        except ComputewatchError:
            checks.bad("rules", f"run {rid}: the step records cannot be read, so no rule can be applied")
            continue
        for rule in _audit.rules(staged[rid], steps, request.policy_text, run.get("total_flops"), facts.get("data"), facts.get("benchmarks") or {},
                                 prover=sole_prover(run)):
            outcomes.append(dict(rule, run_id=rid))
            if rule["outcome"] == "violation":
                checks.bad("rules", f"run {rid}: rule {rule['id']}: {rule['detail']}")
            elif rule["outcome"] == "error":
                checks.unsure("rules", f"run {rid}: rule {rule['id']} could not be evaluated: {rule['detail']}")
            else:
                checks.good("rules", f"run {rid}: rule {rule['id']}: {rule['outcome']}")
    return outcomes


# ------------------------------------------------------------------------------- tolerance mode
def _calibrate(cluster: TrustedCluster, runs: dict[str, dict[str, Any]], staged: dict[str, StagedRun], selections: dict[str, list[Segment]],
               expectations: dict[str, list[dict[str, Any]]], request: VerifyRequest, report: Progress) -> dict[str, Any]:
    """Epsilon for tolerance mode from honest reproduction noise on one selected segment
    (`_examine.calibrate`); the false-reject and false-accept rates are measured against spoofed
    replays of the same segment."""
    target = next(((rid, s) for rid, segs in selections.items() for s in segs if s.end is not None), None)
    if target is None:
        return {"epsilon": 1e-6, "false_reject_rate": None, "false_accept_rate": None, "samples": 0, "note": "no segment to calibrate on"}
    rid, seg = target
    report("calibrate", 0, 1)
    plan = _plan(staged[rid], runs[rid], [seg], [], request, None, cluster)
    try:
        out = _examine.calibrate(plan, seg, _CALIBRATION_THREADS)
    except ComputewatchError as exc:  # the Prover's program failed: no epsilon can be had from it
        out = {"epsilon": 0.0, "false_reject_rate": None, "false_accept_rate": None, "samples": 0, "note": f"calibration failed: {exc}"}
    report("calibrate", 1, 1)
    return out


# ---------------------------------------------------------------------------------- documents
def _policy_info(request: VerifyRequest) -> dict[str, Any] | None:
    if not request.policy_text:
        return None
    from computewatch.verifier.rules import Policy

    return Policy.from_bytes(request.policy_text.encode("utf-8"), source="policy").to_json()


def _run_doc(run: dict[str, Any], segs: list[Segment], expectations: list[dict[str, Any]]) -> dict[str, Any]:
    seg_docs = []
    replayed_loss: list[list[Any]] = []
    for seg, res in run.get("segments", []):
        doc = seg.to_json()
        doc["passed"] = res.get("passed")
        doc["distance"] = res.get("distance")
        doc["detail"] = res.get("error", "")
        seg_docs.append(doc)
        replayed_loss.extend(res.get("losses", []))
    fps = run.get("flops_per_step")
    return {
        "run_id": run["run_id"],
        "run_dir": run["run_dir"],
        "provers": run.get("provers", []),
        "program": run.get("program"),
        "steps": run["steps"],
        "world_size": run["world_size"],
        "strategy": run["strategy"],
        "checkpoint_every": run["checkpoint_every"],
        "total_flops": run.get("total_flops"),
        "flops_per_step": fps,
        "compute": run.get("compute", {"busy_seconds": 0.0, "peak_flops_seconds": 0.0, "utilization": None}),
        "series": {
            "loss": run.get("loss", []),
            "replayed_loss": sorted(replayed_loss),
            "lr": run.get("lr", []),
            "expected_lr": run.get("expected_lr", []),
            "update_norms": run.get("update_norms", []),
            "flops_cumulative": [[t, fps * t] for t in range(0, run["steps"] + 1, max(1, run["steps"] // 50))] if fps else [],
        },
        "segments": seg_docs,
        "executors": run.get("executors", 0),  # sandboxed executors that did any of its jobs (replays, loss evaluations)
        "snapshots": [{k: e[k] for k in ("chip", "counter", "step", "rank", "clock_ns", "busy_ns", "explained", "detail")} for e in expectations],
        "memorization": run.get("memorization"),
    }
