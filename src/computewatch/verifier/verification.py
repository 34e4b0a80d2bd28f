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

import math
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computewatch.crypto.signing import VerifyKey
from computewatch.verifier.cluster import Job, TrustedCluster
from computewatch.verifier.evidence import ChipEvidence, find_chip_dirs, read_chip
from computewatch.verifier.selection import Segment, seed_commitment, select_segments

__all__ = ["CHECKS", "VerifyRequest", "verify"]

CHECKS = ("chip-logs", "precommitment", "snapshots", "init", "data", "hyperparameters", "segments", "steps", "memorization", "loss", "compute", "rules")
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
    segments: int | str = 1  # random segments besides snapshot and top-Q ones, or "all"
    threads: int | None = None  # tolerance mode: replay with this many threads
    ray_address: str | None = None
    workers: int = 1
    isolate: bool = True
    in_process: bool = False  # tests of the check logic: jobs run in this process, unsandboxed
    data_dirs: Mapping[str, str] = field(default_factory=dict)  # run id -> the Prover's raw data folder
    responses: Sequence[str | os.PathLike[str]] = ()  # step-challenge response folders (issue 19)
    now_ns: int | None = None  # the judge's clock for response deadlines (default: now)


class _Checks:
    """Check outcomes: a check fails if any finding fails it; None if it could not be decided."""

    def __init__(self) -> None:
        self.fail: dict[str, list[str]] = defaultdict(list)
        self.undecided: dict[str, list[str]] = defaultdict(list)
        self.ok: dict[str, list[str]] = defaultdict(list)

    def bad(self, name: str, detail: str) -> None:
        self.fail[name].append(detail)

    def unsure(self, name: str, detail: str) -> None:
        self.undecided[name].append(detail)

    def good(self, name: str, detail: str) -> None:
        self.ok[name].append(detail)

    def to_json(self) -> list[dict[str, Any]]:
        out = []
        for name in CHECKS:
            if self.fail[name]:
                passed, details = False, self.fail[name]
            elif self.undecided[name]:
                passed, details = None, self.undecided[name]
            elif self.ok[name]:
                passed, details = True, self.ok[name]
            else:
                passed, details = None, ["not run: nothing to check"]
            out.append({"name": name, "passed": passed, "detail": "; ".join(_short(d) for d in details[:6]) + (f"; and {len(details) - 6} more" if len(details) > 6 else "")})
        return out


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pem(keys: Sequence[VerifyKey]) -> tuple[bytes, ...]:
    return tuple(k.to_pem() for k in keys)


def verify(request: VerifyRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Verify the runs against the inspected chips; returns the verdict document
    (docs/verifier.md). Raises EvidenceError / ValueError for unusable input."""
    if request.mode not in ("exact", "tolerance"):
        raise ValueError(f"mode must be exact or tolerance, got {request.mode!r}")
    report = progress or (lambda what, done, total: None)
    checks = _Checks()
    chips = [read_chip(p, request.chipmaker_roots, request.known_heads) for p in find_chip_dirs(request.chips)]
    _check_chip_logs(chips, checks)
    cluster = TrustedCluster(workers=request.workers, ray_address=request.ray_address, isolate=request.isolate, in_process=request.in_process)
    keys = _pem(request.prover_keys)
    report("inventory", 0, len(request.runs))
    runs_dirs = [str(Path(r)) for r in request.runs]
    inventories = cluster.run([Job("inventory", {"run_dir": d}, keys) for d in runs_dirs], lambda d, t: report("inventory", d, t))
    runs: dict[str, dict[str, Any]] = {}
    for run_dir, inv in zip(runs_dirs, inventories):
        if "error" in inv:
            checks.bad("precommitment", f"{run_dir}: the transcript is not authentic or not readable: {inv['error']}")
            continue
        if inv["run_id"] in runs:
            checks.bad("precommitment", f"run {inv['run_id']} submitted twice ({runs[inv['run_id']]['run_dir']} and {run_dir})")
            continue
        inv["run_dir"] = run_dir
        runs[inv["run_id"]] = inv
        for problem in inv["problems"]:
            checks.bad("data" if problem.startswith("step records") else "segments", f"run {inv['run_id']}: {problem}")
    expectations = _map_chips_to_runs(chips, runs, checks)
    selections = _select(runs, expectations, request)
    tolerance = _calibrate(cluster, runs, selections, request, keys, report) if request.mode == "tolerance" else None
    seg_jobs, seg_keys = [], []
    for run_id, segs in selections.items():
        inv = runs[run_id]
        for seg in segs:
            wanted = [e for e in expectations[run_id] if (seg.start < e["step"] <= (seg.end if seg.end is not None else seg.stop or 0))]
            spec = _segment_spec(inv, seg, wanted, request, tolerance)
            seg_jobs.append(Job("segment", spec, keys))
            seg_keys.append((run_id, seg))
    results = cluster.run(seg_jobs, lambda d, t: report("replay", d, t))
    flops = _judge_segments(runs, seg_keys, results, expectations, request, checks, tolerance)
    _judge_unreplayed_snapshots(runs, expectations, seg_keys, results, checks)
    audits = _run_audits(cluster, runs, selections, flops, request, keys, report)
    rules = _judge_audits(runs, audits, checks)
    if request.policy_text is None:
        checks.unsure("rules", "not run: no policy given (--policy), so no rule was applied")
    _judge_compute(runs, chips, flops, checks)
    from computewatch.verifier.spot_checks import verify_hook  # step commitments and challenges (issue 19)

    step_evidence = verify_hook(request, runs, cluster, keys, checks, tolerance)
    doc_checks = checks.to_json()
    logged = sum(len(c.snapshots) for c in chips)
    explained = sum(1 for rid in expectations for e in expectations[rid] if e.get("explained"))
    verdict = _verdict(doc_checks, request.mode)
    total = [runs[r].get("total_flops") for r in runs]
    return {
        "verdict": verdict,
        "checks": doc_checks,
        "total_flops": sum(t for t in total if t is not None) if runs and all(t is not None for t in total) else None,
        "verification_flops": sum(r.get("verification_flops", 0) for r in runs.values()) if runs else None,
        "snapshots": {"logged": logged, "explained": explained},
        "mode": request.mode,
        "isolation": cluster.isolation,
        "selection": {
            "seed_commitment": seed_commitment(request.seed),
            "seed": request.seed.hex(),
            "segments_total": sum(max(0, len(r.get("checkpoint_steps", [])) - 1) for r in runs.values()),
            "segments_replayed": len(seg_keys),
        },
        "tolerance": tolerance,
        **step_evidence,
        "policy": _policy_info(request),
        "rules": rules,
        "runs": [_run_doc(runs[r], selections.get(r, []), expectations.get(r, [])) for r in runs],
        "chips": [{"serial": c.serial, "entries": c.audit.entries, "snapshots": len(c.snapshots), "ok": c.audit.ok, "root": c.audit.root} for c in chips],
    }


def _verdict(checks: list[dict[str, Any]], mode: str) -> str:
    if any(c["passed"] is False for c in checks):
        return "violation"
    decisive = [c for c in checks if c["name"] not in ("memorization",)]  # advisory: see docs/verifier.md
    if any(c["passed"] is None and not c["detail"].startswith("not run") for c in decisive):
        return "inconclusive"
    return "compliant"


# ----------------------------------------------------------------------------------- chip logs
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
        out[rid] = select_segments(rid, run["checkpoint_steps"], steps, run["update_norms"], request.seed, count=request.segments)
    return out


def _segment_spec(inv: dict[str, Any], seg: Segment, wanted: list[dict[str, Any]], request: VerifyRequest, tolerance: dict[str, Any] | None) -> dict[str, Any]:
    eps = tolerance["epsilon"] if tolerance else None
    return {
        "run_dir": inv["run_dir"],
        "start": seg.start,
        "end": seg.end,
        "snapshots": [{"rank": e["rank"], "step": e["step"], "digest": e["digest"], "object": e["object"], "epsilon": eps} for e in wanted if e["object"] is not None],
        "mode": request.mode,
        "threads": request.threads if request.mode == "tolerance" else None,
        "world_size": inv["world_size"],
        "strategy": inv["strategy"],
        "data_dir": request.data_dirs.get(inv["run_id"]),
        "count_flops": True,
        "step_digests": True,  # issue 19: the replay's weights digest after every step
    }


# -------------------------------------------------------------------------------- replay verdict
def _segment_passed(res: dict[str, Any], mode: str, tolerance: dict[str, Any] | None) -> bool:
    if mode == "exact":
        return bool(res.get("end_model_equal") and res.get("end_optimizer_equal"))
    assert tolerance is not None
    d = res.get("distance") or {}
    return d.get("relative", math.inf) <= tolerance["epsilon"]


def _judge_segments(
    runs: dict[str, dict[str, Any]],
    seg_keys: list[tuple[str, Segment]],
    results: list[dict[str, Any]],
    expectations: dict[str, list[dict[str, Any]]],
    request: VerifyRequest,
    checks: _Checks,
    tolerance: dict[str, Any] | None,
) -> dict[str, int | None]:
    per_step: dict[str, list[int]] = defaultdict(list)
    for (rid, seg), res in zip(seg_keys, results):
        run = runs[rid]
        run.setdefault("segments", []).append((seg, res))
        label = f"run {rid} segment {seg.start}->{seg.end if seg.end is not None else seg.stop}"
        mismatch = res.get("environment_mismatch") or []
        unsure = request.mode == "exact" and bool(mismatch)
        if "error" in res:
            (checks.unsure if unsure else checks.bad)("segments", f"{label}: replay failed: {res['error']}")
            continue
        if res.get("flops_per_step"):
            per_step[rid].append(int(res["flops_per_step"]))
        steps = (seg.end if seg.end is not None else seg.stop or seg.start) - seg.start
        run["verification_flops"] = run.get("verification_flops", 0) + (res.get("flops_per_step") or 0) * steps
        for key, check, what in (("samples_ok", "data", "replayed samples differ from the committed ones"),
                                 ("lr_ok", "hyperparameters", "the recorded lr differs from the precommitted schedule"),
                                 ("rng_ok", "segments", "the recorded RNG states differ from the replay's")):
            if not res.get(key, True):
                checks.bad(check, f"{label}: {what} ({'; '.join(res.get('problems', [])[:2])})")
        if not res.get("loss_ok", True):
            (checks.unsure if unsure else checks.bad)("loss", f"{label}: recorded losses differ from the replayed ones")
        else:
            checks.good("loss", f"{label}: recorded losses equal the replayed ones")
        if seg.end is not None:
            res["passed"] = None if unsure else _segment_passed(res, request.mode, tolerance)
            if res["passed"]:
                checks.good("segments", f"{label} replays to the next checkpoint" + (f" (relative distance {res['distance']['relative']:.2e})" if request.mode == "tolerance" else " bit for bit"))
            elif unsure:
                checks.unsure("segments", f"{label}: not reproduced, but this machine differs from the recording one ({'; '.join(mismatch)}): exact replay is impossible here")
            else:
                what = "bit for bit" if request.mode == "exact" else f"within epsilon (relative distance {res['distance']['relative']:.3e})"
                checks.bad("segments", f"{label}: replay does not reproduce the next checkpoint {what}")
        replayed = {(s["rank"], s["step"]): s for s in res.get("snapshots", [])}
        for e in expectations[rid]:
            s = replayed.get((e["rank"], e["step"]))
            if s is None or e["object"] is None:
                continue
            if s["explained"]:
                e["explained"], e["detail"] = True, f"reproduced by replaying {seg.start}->{e['step']}"
            elif unsure:
                e["detail"] = "not reproduced on this (different) machine"
                checks.unsure("snapshots", f"{e['chip']} snapshot {e['counter']} (step {e['step']}): {e['detail']}")
            else:
                e["detail"] = "the transcript does not reproduce it"
                checks.bad("snapshots", f"{e['chip']} snapshot {e['counter']} (step {e['step']}): replay from checkpoint {seg.start} does not reproduce the logged shard")
    out: dict[str, int | None] = {}
    for rid, run in runs.items():
        measured = per_step.get(rid)
        run["flops_per_step"] = round(sum(measured) / len(measured)) if measured else None
        run["total_flops"] = run["flops_per_step"] * run["steps"] if measured else None
        out[rid] = run["total_flops"]
    return out


def _judge_unreplayed_snapshots(runs: dict[str, dict[str, Any]], expectations: dict[str, list[dict[str, Any]]], seg_keys: list[tuple[str, Segment]], results: list[dict[str, Any]], checks: _Checks) -> None:
    explained = sum(1 for rid in expectations for e in expectations[rid] if e["explained"])
    total = sum(len(v) for v in expectations.values())
    for rid in expectations:
        for e in expectations[rid]:
            if e["object"] is not None and not e["explained"] and not e["detail"]:
                checks.bad("snapshots", f"{e['chip']} snapshot {e['counter']} (step {e['step']}): no checkpoint segment of run {rid} covers it")
                e["detail"] = "no segment covers it"
    if total and explained == total:
        checks.good("snapshots", f"all {total} logged snapshots map to a run, a rank and a record, and replay reproduces them")


# -------------------------------------------------------------------------------- audit verdict
def _run_audits(cluster: TrustedCluster, runs: dict[str, dict[str, Any]], selections: dict[str, list[Segment]], flops: dict[str, int | None], request: VerifyRequest, keys: tuple[bytes, ...], report: Progress) -> list[dict[str, Any]]:
    jobs = []
    for rid, run in runs.items():
        memo = [[s.start, s.end] for s in selections[rid] if s.end is not None][:_MEMORIZATION_SEGMENTS]
        spec = {
            "run_dir": run["run_dir"],
            "seed": request.seed.hex(),
            "memorization": memo,
            "data_dir": request.data_dirs.get(rid),
            "policy": request.policy_text,
            "total_flops": flops.get(rid),
        }
        jobs.append(Job("audit", spec, keys))
    return cluster.run(jobs, lambda d, t: report("audit", d, t))


def _judge_audits(runs: dict[str, dict[str, Any]], audits: list[dict[str, Any]], checks: _Checks) -> list[dict[str, Any]]:
    outcomes: list[dict[str, Any]] = []
    for (rid, run), res in zip(runs.items(), audits):
        if "program_error" in res or "error" in res:
            msg = res.get("program_error") or res.get("error")
            for name in ("init", "data", "hyperparameters"):
                (checks.bad if res.get("program_tampered", True) else checks.unsure)(name, f"run {rid}: {msg}")
            continue
        for name in ("init", "data", "hyperparameters"):
            item = res[name]
            (checks.good if item["passed"] else checks.bad)(name, f"run {rid}: {item['detail']}")
        run["expected_lr"] = res["hyperparameters"].get("expected_lr", [])
        memo = res.get("memorization")
        run["memorization"] = memo
        if memo and memo.get("passed") is False:
            checks.bad("data", f"run {rid}: memorization test: {memo['detail']}")
        elif memo:
            text = f"run {rid}: z = {memo['statistic']:.2f} over {memo['segments']} segment(s), p = {memo['p_value']:.3g}"
            if memo["p_value"] < 0.05:
                checks.good("memorization", text + ": trained samples' loss dropped more than held-out samples'")
            else:
                checks.unsure("memorization", text + ": no significant memorization signal (advisory; short segments have little power)")
        for rule in res.get("rules", []):
            outcomes.append(dict(rule, run_id=rid))
            if rule["outcome"] == "violation":
                checks.bad("rules", f"run {rid}: rule {rule['id']}: {rule['detail']}")
            elif rule["outcome"] == "error":
                checks.unsure("rules", f"run {rid}: rule {rule['id']} could not be evaluated: {rule['detail']}")
            else:
                checks.good("rules", f"run {rid}: rule {rule['id']}: {rule['outcome']}")
    return outcomes


def _judge_compute(runs: dict[str, dict[str, Any]], chips: list[ChipEvidence], flops: dict[str, int | None], checks: _Checks) -> None:
    by_serial = {c.serial: c for c in chips}
    for rid, run in runs.items():
        total = flops.get(rid)
        if total is None:
            checks.unsure("compute", f"run {rid}: no segment was replayed, so its FLOPs were not measured")
            continue
        unknown: dict[str, int] = {}
        for _seg, res in run.get("segments", []):
            for k, v in (res.get("unknown_ops") or {}).items():
                unknown[k] = unknown.get(k, 0) + v
        inspected = [by_serial[s] for s in run["chips"] if s in by_serial]
        busy_s = sum(c.busy_by_run.get(rid, 0) for c in inspected) / 1e9
        capacity = sum(c.busy_by_run.get(rid, 0) / 1e9 * c.peak_flops for c in inspected)
        if inspected and len(inspected) < run["world_size"]:
            capacity *= run["world_size"] / len(inspected)  # the uninspected chips' share, assumed alike
        utilization = total / capacity if capacity > 0 else None
        run["compute"] = {"busy_seconds": busy_s, "peak_flops_seconds": capacity, "utilization": utilization}
        detail = f"run {rid}: {total:.3e} FLOPs ({run['flops_per_step']:.3e} per step x {run['steps']} steps, 1 FMA = 2 FLOP)"
        if unknown:
            detail += f"; NOT counted (unknown to the counter): {', '.join(f'{k} x{v}' for k, v in sorted(unknown.items()))}"
            run["flops_complete"] = False
        if utilization is not None:
            detail += f"; {utilization:.2e} of the inspected chips' certified peak over their logged busy time"
            if utilization > 1.0:
                checks.bad("compute", detail + ": more compute than the chips could deliver")
                continue
        checks.good("compute", detail)


# ------------------------------------------------------------------------------- tolerance mode
def _calibrate(cluster: TrustedCluster, runs: dict[str, dict[str, Any]], selections: dict[str, list[Segment]], request: VerifyRequest, keys: tuple[bytes, ...], report: Progress) -> dict[str, Any]:
    """Epsilon for tolerance mode from honest reproduction noise on one selected segment: the
    distance between the Verifier's own replays under different thread counts (never a distance
    to the Prover's checkpoint, which a drift built into the transcript would inflate). The
    false-reject and false-accept rates are measured against spoofed replays of the same
    segment (lr +1%, one batch swapped) compared with the recorded checkpoint."""
    target = next(((rid, s) for rid, segs in selections.items() for s in segs if s.end is not None), None)
    if target is None:
        return {"epsilon": 1e-6, "false_reject_rate": None, "false_accept_rate": None, "samples": 0, "note": "no segment to calibrate on"}
    rid, seg = target
    inv = runs[rid]
    base = _segment_spec(inv, seg, [], request, None) | {"mode": "tolerance", "count_flops": False}
    honest = [Job("segment", base | {"threads": t, "reference_threads": _CALIBRATION_THREADS[0]}, keys) for t in _CALIBRATION_THREADS[1:]]
    spoofs = [Job("segment", base | {"threads": _CALIBRATION_THREADS[0], "perturb": p}, keys) for p in ({"lr_scale": 1.01}, {"swap_batch": True})]
    results = cluster.run(honest + spoofs, lambda d, t: report("calibrate", d, t))
    h = [r["distance"]["relative"] for r in results[: len(honest)] if "distance" in r]
    s = [r["distance"]["relative"] for r in results[len(honest) :] if "distance" in r]
    noise = max(h) if h else 0.0
    epsilon = max(10 * noise, 1e-6)
    return {
        "epsilon": epsilon,
        "false_reject_rate": sum(d > epsilon for d in h) / len(h) if h else None,
        "false_accept_rate": sum(d <= epsilon for d in s) / len(s) if s else None,
        "samples": len(h) + len(s),
        "honest_relative": h,
        "spoof_relative": s,
        "segment": {"run_id": rid, "from": seg.start, "to": seg.end},
    }


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
        "snapshots": [{k: e[k] for k in ("chip", "counter", "step", "rank", "clock_ns", "busy_ns", "explained", "detail")} for e in expectations],
        "memorization": run.get("memorization"),
    }
