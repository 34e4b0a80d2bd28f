"""Step challenges (issue 19): detection against the closed form, the Verifier's cost share,
top-Q on a 10x update jump, and bisection to the forged step and operator.

Method.
1. Forged runs of the tiny MLP demo workload, ``--steps`` steps (default 2,000, checkpoint every
   100), whose cheater nudges the weights (x (1 + 1e-3)) after a fraction b of the steps
   (0.1%, 1%, 10%, positions drawn at random) and records everything else honestly, so the
   commitment chain is internally consistent.
2. The real judge (`spot_checks.judge_responses`, replays in the sandboxed executor) decides every
   forged step and a random sample of honest steps, answered by the cheater's own `respond`:
   every forged step must fail and be localized (step, first diverging operator, rounds within
   ceil(log2 ops)), and no honest step may fail. The first diverging operator is checked
   against a linear scan of the two operator traces.
3. Detection over ``--trials`` challenge seeds for K drawn steps: a trial detects the forgery
   when a drawn step failed in step 2 (each drawn step's verdict is the judge's own); compared
   with the closed form 1 - C(n-m, K)/C(n, K) (about 1 - (1 - b)^K). The Verifier's cost share
   is replayed step FLOPs over training FLOPs (FLOPs per step measured by the step job's
   counter): K / n.
4. Top-Q: ``--jump-trials`` runs with one step at 10x the learning rate at a random position;
   caught when a challenge with top-Q = 2 and K = 0 draws it and the judge fails it.
5. Step bisection: for segments (checkpoint to checkpoint) that hold a forged step of the 1%
   run, the judge bisects over the committed step digests, asking the cheater for each midpoint
   state (a challenge/response round), replaying from the agreed state in the sandboxed executor
   (`step_replay.state_replayer`); it must name the first
   forged step of the segment within ceil(log2 L) rounds.

    python benchmarks/bench_spot_checks.py --json [--steps 2000] [--trials 2000] [--jump-trials 5]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


from computewatch.adversary._step_forgery_runs import _keys, _Memo, challenge_and_judge, detection_closed_form, forged_run
from computewatch.verifier.bisection import bisect_segment
from computewatch.verifier.challenges import draw_steps


def _first_difference(a: list[list[str]], b: list[list[str]]) -> int | None:
    for i in range(max(len(a), len(b))):
        if i >= len(a) or i >= len(b) or list(a[i]) != list(b[i]):
            return i
    return None


def _judge_steps(run: Any, steps: list[int], work: Path) -> tuple[dict[int, bool], list[dict[str, Any]], dict[str, Any]]:
    """The judge's verdict on each of `steps` (one challenge holding exactly them)."""
    keys = _keys(run.run_dir)
    memo = _Memo(keys)
    inv = run.inventory(keys)
    spot, localized, _findings, _ch = challenge_and_judge(run, keys, b"\x01" * 32, 0, work, memo=memo, steps=steps)
    failed = {f["step"] for f in spot["failed"]}
    flops = [r.get("flops") for r in memo.cache.values() if r.get("flops")]
    return {t: t not in failed for t in steps}, localized, {"spot": spot, "flops_per_step": flops[0] if flops else None, "memo": memo, "inv": inv}


def _check_localization(localized: list[dict[str, Any]], forged: set[int], memo: Any, run: Any, work: Path) -> dict[str, Any]:
    named_step = sum(1 for loc in localized if loc["step"] in forged)
    within = sum(1 for loc in localized if loc["rounds"] <= loc["round_bound"])
    ops = {loc["operator"] for loc in localized}
    # Ground truth: the first index where the judge's trace and the cheater's differ.
    agree = 0
    from computewatch.formats.challenge import response_object

    folders = sorted(work.glob("response-*"))
    resp = json.loads((folders[-1] / "response.json").read_bytes()) if folders else {"answers": []}
    theirs_by_step = {a["step"]: json.loads(response_object(folders[-1], a["ops"])) for a in resp["answers"] if a["ops"]}
    mine_by_step = {k[1]: v.get("ops", []) for k, v in memo.cache.items()}
    for loc in localized:
        truth = _first_difference(mine_by_step.get(loc["step"], []), theirs_by_step.get(loc["step"], []))
        agree += truth == loc["operator_index"]
    return {"localized": len(localized), "forged": len(forged), "named_forged_step": named_step, "within_round_bound": within,
            "operator_equals_linear_scan": agree, "operators": sorted(o for o in ops if o)}


def _segment_bisection(run: Any, forged: list[int], every: int, work: Path, limit: int) -> list[dict[str, Any]]:
    from computewatch.crypto.signing import VerifyKey
    from computewatch.formats.checkpoint import decode_checkpoint
    from computewatch.formats.commitments import checkpoint_commitment
    from computewatch.prover.respond import respond
    from computewatch.verifier._run import staged_run
    from computewatch.verifier.sandbox import sandbox_problem
    from computewatch.verifier.step_replay import state_replayer

    keys = _keys(run.run_dir)
    inv = run.inventory(keys)
    summary = inv["step_commitments"]
    out = []
    segments = sorted({(t // every) * every for t in forged})[:limit]
    with staged_run(str(run.run_dir), [VerifyKey.from_pem(k) for k in keys]) as staged:
        names = [reg.param for reg in staged.layout.chips[0]]
        # The judge's replays run in the sandboxed executor, started once for every round.
        with state_replayer(staged, sandbox=sandbox_problem() is None) as replay_state:

            def ask(s: int) -> Any:
                folder = work / f"ask-{s}"
                shutil.rmtree(folder, ignore_errors=True)
                challenge = {"v": 1, "kind": "computewatch/step-challenge", "run_id": inv["run_id"], "precommitment_digest": inv["precommitment_digest"],
                             "records_root": summary["records_root"], "steps_count": summary["count"], "mode": "exact", "issued_ns": "0",
                             "deadline_s": 3600, "steps": [{"step": s, "reasons": ["bisection"]}], "tag": ""}
                respond(run.run_dir, challenge, folder, step_fn=run.step_fn)
                answer = json.loads((folder / "response.json").read_bytes())["answers"][0]
                raw = (folder / "objects" / answer["before"]).read_bytes()
                return raw, decode_checkpoint(raw)

            def digest(state: Any) -> tuple[str, str]:
                return checkpoint_commitment(state[1].model, names, state[1].optimizer_tensors)

            def replay(state: Any, a: int, b: int) -> tuple[str, str]:
                return replay_state(state[0], a, b)

            def committed(s: int) -> tuple[str, str]:
                return tuple(summary["initial"][0]) if s == 0 else tuple(summary["state"][s - 1][0])  # type: ignore[return-value]

            for lo in segments:
                hi = min(lo + every, summary["count"])
                found = bisect_segment(lo, hi, ask, digest, replay, committed)
                first = min(t for t in forged if lo <= t < hi)
                out.append({"segment": [lo, hi], "first_forged": first, "named": found.step, "rounds": found.rounds, "bound": found.bound,
                            "ok": found.step == first and found.rounds <= found.bound})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100, help="checkpoint interval")
    ap.add_argument("--trials", type=int, default=2000, help="challenge seeds per setting")
    ap.add_argument("--honest-sample", type=int, default=60, help="honest steps the judge replays per run")
    ap.add_argument("--jump-trials", type=int, default=5)
    ap.add_argument("--bisect-segments", type=int, default=3)
    ap.add_argument("--only-top-q", action="store_true", help="run only the top-Q jump trials")
    ap.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    args = ap.parse_args()
    n = args.steps
    rng = random.Random(19)
    doc: dict[str, Any] = {"steps": n, "checkpoint_every": args.every, "trials": args.trials, "forgeries": [], "top_q": None}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="computewatch-spot-") as tmp_name:
        tmp = Path(tmp_name)
        for share in () if args.only_top_q else (0.001, 0.01, 0.1):
            m = max(1, round(share * n))
            forged = sorted(rng.sample(range(n), m))
            run = forged_run(tmp / f"run-{m}", n, forged, "break", checkpoint_every=args.every)
            honest = rng.sample([t for t in range(n) if t not in set(forged)], min(args.honest_sample, n - m))
            work = tmp / f"judge-{m}"
            verdicts, localized, info = _judge_steps(run, forged + honest, work)
            fps = info["flops_per_step"]
            entry: dict[str, Any] = {
                "share": share, "forged_steps": m,
                "judge": {"forged_failed": sum(not verdicts[t] for t in forged), "honest_passed": sum(verdicts[t] for t in honest), "honest_sampled": len(honest)},
                "localization": _check_localization(localized, set(forged), info["memo"], run, work),
                "flops_per_step": fps,
                "detection": [],
            }
            failing = {t for t, ok in verdicts.items() if not ok}
            for k in sorted({max(1, n // 100), 100, math.ceil(math.log(0.01) / math.log(1 - m / n)) if m < n else 1}):
                if k > n:
                    continue
                caught = 0
                for i in range(args.trials):
                    drawn = draw_steps(f"trial {i}".encode().ljust(32, b"."), "run", n, k)
                    # Each drawn step's verdict is the judge's from step 2 (every forged step was
                    # judged; an honest step outside the judged sample passes, as the sampled ones did).
                    caught += any(d["step"] in failing for d in drawn)
                entry["detection"].append({"K": k, "cost_share": k / n, "measured": caught / args.trials,
                                           "closed_form": detection_closed_form(n, m, k), "approx_1_minus_1_minus_b_to_K": 1 - (1 - m / n) ** k})
            if share == 0.01 and args.bisect_segments:
                entry["step_bisection"] = _segment_bisection(run, forged, args.every, tmp / "bisect", args.bisect_segments)
            doc["forgeries"].append(entry)
            shutil.rmtree(run.run_dir, ignore_errors=True)
        caught = 0
        jumps = []
        for i in range(args.jump_trials):
            where = rng.randrange(n // 10, n)
            run = forged_run(tmp / f"jump-{i}", n, [where], "jump", checkpoint_every=args.every)
            spot, localized, _findings, challenge = challenge_and_judge(run, _keys(run.run_dir), bytes([i]) * 32, 0, tmp / f"jump-judge-{i}", top_q=2)
            drawn = [s["step"] for s in challenge["steps"]]
            ok = where in drawn and any(f["step"] == where for f in spot["failed"])
            caught += ok
            jumps.append({"step": where, "drawn": drawn, "caught": ok, "operator": next((loc["operator"] for loc in localized if loc["step"] == where), None)})
            shutil.rmtree(run.run_dir, ignore_errors=True)
        doc["top_q"] = {"trials": args.jump_trials, "caught": caught, "runs": jumps}
    doc["seconds"] = time.perf_counter() - t0
    one = next((e for e in doc["forgeries"] if e["share"] == 0.01), {"detection": []})
    budget = next((d for d in one["detection"] if d["K"] == max(1, n // 100)), None)
    doc["targets"] = {
        "detection_at_1pct_cost_for_1pct_forgery": budget["measured"] if budget else None,
        "met_99pct_at_1pct_cost": bool(budget and budget["measured"] >= 0.99),
        "steps_needed_for_99pct_at_1pct_cost": math.ceil(100 * math.log(0.01) / math.log(0.99)),
        "top_q_caught_every_jump": caught == args.jump_trials,
        "bisection_named_every_forged_step_and_operator": all(
            e["localization"]["named_forged_step"] == e["localization"]["localized"] == e["forged_steps"] == e["localization"]["operator_equals_linear_scan"]
            and e["localization"]["within_round_bound"] == e["localization"]["localized"] for e in doc["forgeries"]),
        "step_bisection_named_first_forged_step": all(s["ok"] for e in doc["forgeries"] for s in e.get("step_bisection", [])),
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
