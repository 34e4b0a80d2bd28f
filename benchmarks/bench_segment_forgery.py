"""One-segment forgery detection of the Verifier's segment choice, measured against the closed
form (issue 18, "sampling that samples").

A run of `--segments` checkpoint segments whose update norms fall with time (early updates are
largest, as in training) and one logged snapshot in the first segment. The Prover forges one
segment that no deterministic pick (snapshot, top-Q) covers; the Verifier draws with a fresh seed
per trial. Reported per choice: the closed form `selection_summary` gives and the rate measured
over `--trials` seeds, the worst over every forgeable position. `count=1` is the old default
(one random segment), `target=0.5` the new one.

    python benchmarks/bench_segment_forgery.py [--segments 12] [--trials 2000]

Prints JSON and writes benchmarks/results/bench_segment_forgery.json.
"""

from __future__ import annotations

import argparse
import itertools

from _results import publish  # benchmarks/_results.py (this script's folder is on sys.path)

from computewatch.verifier.selection import select_segments, selection_summary


def measure(segments: int, trials: int, count: int | None, target: float) -> dict[str, object]:
    steps = list(range(0, 10 * segments + 1, 10))
    norms = [[a, b, 100.0 / (i + 1)] for i, (a, b) in enumerate(itertools.pairwise(steps))]
    snapshots = [5]
    chosen = select_segments("run", steps, snapshots, norms, b"k" * 32, count=count, detection_target=target)
    fixed = {s.start for s in chosen if "random" not in s.reasons}
    rates = {}
    for forged in (a for a in steps[:-1] if a not in fixed):
        hits = sum(
            any(s.start == forged for s in select_segments("run", steps, snapshots, norms, i.to_bytes(4, "big") * 8, count=count, detection_target=target))
            for i in range(trials)
        )
        rates[forged] = hits / trials
    return {"replayed": len(chosen), **selection_summary(chosen, steps), "measured_worst": min(rates.values()), "measured_mean": sum(rates.values()) / len(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    out = {
        "segments": args.segments,
        "trials": args.trials,
        "count=1": measure(args.segments, args.trials, 1, 0.5),
        "target=0.5": measure(args.segments, args.trials, None, 0.5),
        "target=0.9": measure(args.segments, args.trials, None, 0.9),
    }
    publish("bench_segment_forgery", out)


if __name__ == "__main__":
    main()
