"""Verification cost against the detection rate of a one-segment forgery (issue 8).

A forgery confined to one checkpoint-to-checkpoint segment is caught exactly when the Verifier
replays that segment (a replayed forged segment never ends at the next checkpoint: the tests in
tests/test_verifier_attacks.py show each spoof caught once replayed). So per verification

    detection = P(the forged segment is selected),  cost = replayed FLOPs / training FLOPs.

Part 1 measures both on a real run at the demo's snapshot rate: one honest run (the tiny MLP,
64 steps, a checkpoint every 4: 16 segments) verified with the default choice (every segment
holding a snapshot, the top-Q update, one random segment), its cost read from the verdict's FLOP
counts, and the detection rate of a forgery in each segment under many Verifier seeds, with the
selection code the Verifier runs; then one real forged run (a batch swap in a segment without a snapshot) is
verified with the default choice, and again with `--segments all`.

Part 2 applies the same selection rule at the paper's rate (f = 0.1 snapshots per chip-day, a
realistic step time and checkpoint interval): a segment of duration d on N chips holds a snapshot
with probability 1 - exp(-f N d); the cost is the replayed share of segments.

    python benchmarks/bench_verifier.py [--seeds 2000]

Prints JSON and writes benchmarks/results/bench_verifier.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

DAY = 86400.0


def _measured(seeds: int) -> dict[str, Any]:
    from _runs import failed, honest_run, run_verify

    from computewatch.adversary import Deviation, train_with_deviation
    from computewatch.verifier import select_segments

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = honest_run(Path(tmp) / "honest", steps=64, checkpoint_every=4)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        doc = run_verify(run, segments=1)
        verify_s = time.perf_counter() - t0
        assert doc["verdict"] == "compliant", failed(doc)
        info = doc["runs"][0]
        snapshots = sorted(s["step"] for s in info["snapshots"])
        checkpoints = list(range(0, 65, 4))
        norms = info["series"]["update_norms"]
        pairs = list(itertools.pairwise(checkpoints))
        hits = dict.fromkeys(pairs, 0)
        for i in range(seeds):
            for seg in select_segments(info["run_id"], checkpoints, snapshots, norms, i.to_bytes(8, "big") * 4, count=1):
                hits[(seg.start, seg.end)] += 1
        per_segment = {f"{a}-{b}": hits[(a, b)] / seeds for a, b in pairs}
        free = [p for p in pairs if not any(p[0] < t <= p[1] for t in snapshots)]
        # A real forgery in segment 56-60, which holds no snapshot at this chip secret.
        forged = train_with_deviation(Path(tmp) / "forged", Deviation(swap_steps=(57, 58)), steps=64, chip_secret_seed=b"t" * 32)
        by_default = run_verify(forged, segments=1)
        by_all = run_verify(forged, segments="all")
    return {
        "run": {"preset": "mlp", "steps": 64, "checkpoint_every": 4, "segments": len(pairs), "snapshots": len(snapshots),
                "segments_with_snapshot": len(pairs) - len(free), "train_seconds": train_s, "verify_seconds": verify_s},
        "cost_default": doc["verification_flops"] / doc["total_flops"],
        "segments_replayed_default": doc["selection"]["segments_replayed"],
        "detection_per_segment": per_segment,
        "detection_mean": sum(per_segment.values()) / len(pairs),
        "detection_worst": min(per_segment.values()),
        "detection_snapshot_free_mean": (sum(per_segment[f"{a}-{b}"] for a, b in free) / len(free)) if free else None,
        "real_forgery_snapshot_free_segment": {
            "default_verdict": by_default["verdict"],
            "default_failed": sorted(c["name"] for c in by_default["checks"] if c["passed"] is False),
            "all_verdict": by_all["verdict"],
            "all_failed": sorted(c["name"] for c in by_all["checks"] if c["passed"] is False),
        },
    }


def _paper_rate(f_per_day: float, inspected: int, step_seconds: float, checkpoint_every: int, days: float, random_segments: int, top_q: int = 1) -> dict[str, Any]:
    """Only snapshots of inspected chips are evidence (Appendix D step 3): a segment holds one with
    probability 1 - exp(-f * inspected * duration). Every rank's step is replayed together, so a
    segment costs its share of the run's FLOPs whichever chip logged the snapshot."""
    segment_seconds = step_seconds * checkpoint_every
    segments = max(1, int(days * DAY / segment_seconds))
    p_snapshot = 1.0 - math.exp(-f_per_day * inspected * segment_seconds / DAY)
    extra = min(random_segments + top_q, segments) / segments
    replayed = p_snapshot + (1.0 - p_snapshot) * extra
    return {
        "f_per_chip_day": f_per_day, "inspected_chips": inspected, "step_seconds": step_seconds,
        "checkpoint_every": checkpoint_every, "days": days, "segments": segments,
        "p_segment_holds_snapshot": p_snapshot,
        "cost": replayed,  # equal-cost segments: the replayed share of the training FLOPs
        "detection_one_segment": replayed,  # a forgery in one segment, placed without knowing the secret trigger times
        "detection_run_wide": 1.0 if replayed * segments >= 1 else replayed * segments,  # every segment forged (e.g. another lr throughout)
        "random_segments_for_99pct_one_segment": max(0, math.ceil(0.99 * segments) - 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2000, help="Verifier seeds per segment for the detection rate")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_verifier.json")
    args = ap.parse_args(argv)
    if not 1 <= args.seeds <= 1_000_000:
        ap.error("--seeds must be in 1..1000000")
    result = {
        "demo_rate": _measured(args.seeds),
        "paper_rate": [
            # One 8-chip server trained for a day, every chip inspected.
            _paper_rate(0.1, 8, 1.0, 100, 1.0, 1),
            # A Chinchilla-scale run: ~4000 chips for 30 days, a 4 s step, a checkpoint an hour;
            # 20 of its chips inspected (Eq. 1 samples a fraction of the stockpile), and all of them.
            _paper_rate(0.1, 20, 4.0, 900, 30.0, 1),
            _paper_rate(0.1, 4096, 4.0, 900, 30.0, 1),
        ],
        "goal": {"detection_per_run": 0.99, "max_cost": 0.01},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
