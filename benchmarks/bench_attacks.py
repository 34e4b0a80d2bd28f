"""The attack suite with more trials: how often each cheat is caught, against the prediction.

Runs every attack of `computewatch.adversary` (docs/attacks.md) in one shared context (one
honest run trained once, one register):
- deterministic attacks ("caught", "gap"): --caught-trials variants each (capped at each
  attack's own maximum: the training-based spoofs allow 1-5), every one of which must end in the
  named check;
- sampling attacks ("rate": random snapshot times, Appendix C, collusion): --rate-trials
  monitoring histories each, drawn with the regime's own inspection draw and chip schedules;
  the measured rate, its 95% and 99.9% Wilson intervals and the closed form of
  `computewatch.analysis` are reported, with `agrees` (the closed form inside the 99.9%
  interval).
The baseline measured in the same run is the closed form itself: `rate_over_predicted` is the
measured rate over the predicted one (1.0 when the analysis is right).

    python benchmarks/bench_attacks.py [--caught-trials 5] [--rate-trials 20000] [--seed 0]
                                       [--only NAME,NAME] [--out FILE]

Prints JSON and writes benchmarks/results/attacks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caught-trials", type=int, default=5)
    ap.add_argument("--rate-trials", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated attack names (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "attacks.json")
    args = ap.parse_args(argv)
    if args.caught_trials < 1 or args.rate_trials < 1 or args.seed < 0:
        ap.error("trials must be >= 1 and the seed >= 0")

    from computewatch.adversary.suite import (
        Context,
        attack_names,
        get_attack,
        run_attack,
    )
    from computewatch.cli._common import available_cores, progress

    names = [n for n in args.only.split(",") if n] or attack_names()
    for n in names:
        get_attack(n)  # unknown names fail before any work
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    with Context() as ctx, progress("attacks", len(names)) as update:
        for i, name in enumerate(names):
            attack = get_attack(name)
            want = args.rate_trials if attack.kind == "rate" else args.caught_trials
            result = run_attack(name, max(1, min(want, attack.max_trials)), args.seed, context=ctx)
            doc = result.to_json()
            if result.predicted_rate:
                doc["rate_over_predicted"] = result.detection_rate / result.predicted_rate
            results.append(doc)
            update(i + 1)
    out = {
        "benchmark": "attacks",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cores": available_cores()},
        "settings": {"caught_trials": args.caught_trials, "rate_trials": args.rate_trials, "seed": args.seed},
        "seconds": round(time.perf_counter() - start, 1),
        "all_ok": all(r["ok"] for r in results),
        "summary": {
            "caught": sum(r["kind"] == "caught" and r["ok"] for r in results),
            "caught_total": sum(r["kind"] == "caught" for r in results),
            "rates_agreeing": sum(r["kind"] == "rate" and r["ok"] for r in results),
            "rates_total": sum(r["kind"] == "rate" for r in results),
            "gaps": [r["attack"] for r in results if r["kind"] == "gap"],
        },
        "attacks": results,
    }
    text = json.dumps(out, indent=2, sort_keys=True)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, args.out)
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
