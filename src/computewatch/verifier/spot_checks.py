"""The judge of step challenges (issue 19): the `steps` check, `spot_checks` and `localized`.

Two kinds of evidence, both decided here in the Verifier's own process:

1. The chain as the transcript pins it (no answer needed; computed in the inventory job by
   `challenges.commitment_summary`): the manifest signs the step records, every checkpoint equals
   the state committed by the step before it, every chip snapshot equals the committed weights of
   its step. A break is a `steps` finding.
2. Answers to a challenge (`--responses DIR`): the challenge must carry the Verifier's tag, the
   run's step records must still be the ones drawn from (same root), the response must arrive
   within the deadline (the judge's clock), and for every drawn step and rank the answered state
   must hash to the committed state before the step; a sandboxed executor replays exactly that
   one step, whose result must hash to the committed state after it (exact mode) or lie within
   epsilon of the answered after-state, itself hashing to its commitment (tolerance mode). A
   refused, missing, late or inconsistent answer is a violation. On a failed replay the first
   diverging operator is found by bisection over the two operator traces
   (`bisection.bisect_operators`) and named in ``localized``.

``spot_checks = {"drawn", "passed", "failed": [{"run", "step", "rank"}], "replayed_steps",
"cost_share"}``; ``cost_share`` = replayed step FLOPs / the run's training FLOPs (measured FLOPs
per step times its steps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from computewatch.crypto.errors import FormatError
from computewatch.formats.challenge import check_challenge, read_response, response_object
from computewatch.verifier.bisection import bisect_operators

__all__ = ["judge_chain", "judge_responses", "localize_segments", "verify_hook"]

Finding = Callable[[str, str], None]


def judge_chain(runs: dict[str, dict[str, Any]], bad: Finding, good: Finding) -> None:
    """Findings of the commitment chain itself (the inventory's summary of every run)."""
    for rid, run in runs.items():
        summary = run.get("step_commitments")
        if not summary:
            continue
        for problem in summary["problems"]:
            bad("steps", f"run {rid}: {problem}")
        if summary["committed"] and not summary["problems"]:
            good("steps", f"run {rid}: {summary['count']} step commitments form a chain that the signed manifest, every checkpoint and {summary['pins']} snapshot(s) pin")


def _expected_before(summary: dict[str, Any], step: int, rank: int) -> list[str] | None:
    if step == 0:
        return summary["initial"][rank] if rank < len(summary["initial"]) else None
    state = summary["state"][step - 1] if step - 1 < len(summary["state"]) else []
    return state[rank] if rank < len(state) else None


def _expected_after(summary: dict[str, Any], step: int, rank: int) -> list[str] | None:
    state = summary["state"][step] if step < len(summary["state"]) else []
    return state[rank] if rank < len(state) else None


def judge_responses(
    runs: dict[str, dict[str, Any]],
    responses: Sequence[str],
    seed: bytes,
    run_jobs: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    bad: Finding,
    good: Finding,
    *,
    mode: str = "exact",
    epsilon: float | None = None,
    now_ns: int | None = None,
    data_dirs: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Judge the response folders; returns (spot_checks, localized). `run_jobs` checks and
    replays the answered states of one run (`step_replay.judge_steps`, in the sandboxed
    executor) and returns their results in order."""
    now = time.time_ns() if now_ns is None else now_ns
    drawn = passed = replayed = 0
    failed: list[dict[str, Any]] = []
    localized: list[dict[str, Any]] = []
    replayed_flops = 0.0
    cost_base = 0.0
    for folder in responses:
        try:
            resp = read_response(folder)
            challenge = check_challenge(resp.get("challenge"), seed)
            _attach_folders(resp, str(Path(folder).resolve()))
        except FormatError as exc:
            bad("steps", f"response {folder}: {exc}")
            continue
        rid = challenge["run_id"]
        run = runs.get(rid)
        if run is None or not run.get("step_commitments"):
            bad("steps", f"response {folder}: answers run {rid!r}, which was not submitted for verification")
            continue
        summary = run["step_commitments"]
        world = int(run["world_size"])
        if summary["records_root"] != challenge["records_root"] or summary["count"] != challenge["steps_count"]:
            bad("steps", f"run {rid}: the step records changed after the challenge was issued (their root differs from the one drawn from)")
        late = now - int(challenge["issued_ns"]) > int(challenge["deadline_s"]) * 1_000_000_000
        if late:
            bad("steps", f"run {rid}: the response came {(now - int(challenge['issued_ns'])) / 1e9:.0f} s after the challenge, past its {challenge['deadline_s']} s deadline")
        answers = {(a["step"], a["rank"]): a for a in resp["answers"]}
        jobs: list[dict[str, Any]] = []
        keys: list[tuple[int, int, dict[str, Any]]] = []
        for item in challenge["steps"]:
            t = int(item["step"])
            drawn += 1
            for rank in range(world):
                a = answers.get((t, rank))
                if a is None or a["refused"] is not None or not a["before"]:
                    why = "refused" + (f" ({a['refused']})" if a and a["refused"] else "") if a else "not answered"
                    bad("steps", f"run {rid} step {t} rank {rank}: the state before the step was {why}")
                    failed.append({"run": rid, "step": t, "rank": rank})
                    continue
                spec = {"run_dir": run["run_dir"], "step": t, "rank": rank, "response_dir": str(Path(folder).resolve()),
                        "before": a["before"], "after": a["after"] if challenge["mode"] == "tolerance" else None,
                        "expected_before": _expected_before(summary, t, rank),
                        "data_dir": (data_dirs or {}).get(rid)}
                jobs.append(spec)
                keys.append((t, rank, a))
        results = run_jobs(jobs) if jobs else []
        step_ok: dict[int, bool] = {int(i["step"]): not late for i in challenge["steps"]}
        for f in failed:
            if f["run"] == rid:
                step_ok[f["step"]] = False
        fps = run.get("flops_per_step")
        for (t, rank, answer), res in zip(keys, results, strict=True):
            problem, where = _judge_one(summary, challenge["mode"], epsilon, t, rank, res, answer)
            if res.get("replayed"):
                replayed += 1
                replayed_flops += float(res.get("flops") or 0)
                fps = fps or res.get("flops")
            if problem is None:
                continue
            step_ok[t] = False
            bad("steps", f"run {rid} step {t} rank {rank}: {problem}")
            failed.append({"run": rid, "step": t, "rank": rank})
            if where is not None:
                localized.append({"run": rid, "segment": [t, t + 1], "step": t, **where})
        if fps:
            cost_base += float(fps) * int(run.get("steps") or summary["count"])
        ok = sum(1 for v in step_ok.values() if v)
        passed += ok
        if ok == len(step_ok) and step_ok:
            good("steps", f"run {rid}: all {ok} challenged steps answered in time, hashed to their commitments and replayed to the next one")
    spot = {
        "drawn": drawn,
        "passed": passed,
        "failed": failed,
        "replayed_steps": replayed,
        "cost_share": replayed_flops / cost_base if cost_base > 0 else None,
    }
    return spot, localized


def _judge_one(summary: dict[str, Any], mode: str, epsilon: float | None, t: int, rank: int, res: dict[str, Any], answer: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """(problem or None, localization or None) for one answered step and rank."""
    if "error" in res:
        return f"the answered state is unusable: {res['error']}", None
    if res["before"] != _expected_before(summary, t, rank):
        return "the answered state before the step does not hash to its commitment", None
    if rank == 0 and t < len(summary.get("rng", [])) and res.get("rng") != summary["rng"][t]:
        return "the answered RNG state is not the one the step record commits", None
    if not res.get("replayed"):
        return None, None
    if not res.get("samples_ok", True):
        return "the program's samples for this step do not hash to the committed ones", None
    if not res.get("lr_ok", True):
        return f"the recorded learning rate differs from the precommitted schedule ({res.get('lr')!r})", None
    expected_after = _expected_after(summary, t, rank)
    if mode == "exact":
        if res["after"] == expected_after:
            return None, None
        return "replaying the step from the answered state does not reproduce the committed state after it", _localize(res, answer, None)
    if res.get("answered_after") != expected_after:
        return "the answered state after the step does not hash to its commitment", None
    dist = (res.get("distance") or {}).get("relative")
    eps = epsilon if epsilon is not None else 1e-4
    if dist is None or dist > eps:
        return f"the replayed step is {dist:.3e} (relative) from the committed one, above epsilon {eps:.1e}", _localize(res, answer, dist)
    return None, None


def _localize(res: dict[str, Any], answer: dict[str, Any], dist: float | None) -> dict[str, Any]:
    """First diverging operator: bisection over the judge's and the Prover's operator traces."""
    theirs: list[list[str]] = []
    note = None
    folder = answer.get("_folder")
    if answer.get("ops") and folder:
        try:
            theirs = json.loads(response_object(folder, answer["ops"]))
        except (FormatError, ValueError) as exc:
            note = f"the Prover's operator trace is unusable: {exc}"
    found = bisect_operators(res.get("ops", []), theirs)
    out: dict[str, Any] = {"operator": found.operator, "operator_index": found.index, "rounds": found.rounds, "round_bound": found.bound, "distance": dist}
    if note:
        out["note"] = note
    return out


def _attach_folders(resp: dict[str, Any], folder: str) -> None:
    for a in resp["answers"]:
        a["_folder"] = folder



def verify_hook(request: Any, runs: dict[str, dict[str, Any]], staged: dict[str, Any], checks: Any, tolerance: dict[str, Any] | None,
                *, sandbox: bool = True) -> dict[str, Any]:
    """What `verifier.verify` adds to its verdict: the `steps` findings, and `spot_checks` and
    `localized` when the request carries responses (None and [] otherwise). Every replay runs in
    the sandboxed executor (`step_replay.judge_steps`), one per run and response."""
    from computewatch.verifier.protocol import Status
    from computewatch.verifier.step_replay import judge_steps

    judge_chain(runs, checks.bad, checks.good)
    located = localize_segments(runs, request.mode)
    responses = list(getattr(request, "responses", ()) or ())
    if not responses:
        if not any((r.get("step_commitments") or {}).get("committed") for r in runs.values()):
            checks.add("steps", Status.NOT_RUN, "not run: no step commitments (v1 step records) and no challenge responses")
        return {"spot_checks": None, "localized": located}
    by_dir = {str(Path(r["run_dir"]).resolve()): rid for rid, r in runs.items()}
    data_dirs = dict(request.data_dirs)

    def run_jobs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rid = by_dir[str(Path(specs[0]["run_dir"]).resolve())]
        data = data_dirs.get(rid)
        return judge_steps(staged[rid], specs, sandbox=sandbox, data_dir=str(Path(data).resolve()) if data else None,
                           time_scale=getattr(request, "time_scale", 1.0))

    spot, localized = judge_responses(
        runs, responses, request.seed, run_jobs, checks.bad, checks.good,
        mode=request.mode, epsilon=(tolerance or {}).get("epsilon"), now_ns=getattr(request, "now_ns", None),
        data_dirs=data_dirs,
    )
    return {"spot_checks": spot, "localized": located + localized}


def localize_segments(runs: dict[str, dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """The first step of each failed exact-mode segment whose replayed weights leave the
    committed chain: the replay (which ran from the agreed checkpoint) reports its weights digest
    after every step, and the step commitments say what they should be. No Prover round is
    needed; the operator inside that step takes a challenge of that step (`computewatch
    challenge`, then `verify --responses`). Tolerance mode has no digests to compare (every step
    differs in its last bits): there the step is found by `bisection.bisect_segment`."""
    out: list[dict[str, Any]] = []
    if mode != "exact":
        return out
    for rid, run in runs.items():
        summary = run.get("step_commitments") or {}
        if not summary.get("committed"):
            continue
        for seg, res in run.get("segments", []):
            if res.get("passed") is not False or seg.end is None:
                continue
            first = None
            for rank, digests in enumerate(res.get("step_digests") or []):
                for i, digest in enumerate(digests):
                    t = seg.start + i
                    state = summary["state"][t] if t < len(summary["state"]) else []
                    if rank < len(state) and state[rank][0] != digest:
                        first = t if first is None else min(first, t)
                        break
            if first is not None:
                out.append({"run": rid, "segment": [seg.start, seg.end], "step": first, "operator": None, "distance": None,
                            "note": "first step whose replayed weights leave the committed chain; challenge this step to name the operator"})
    return out
