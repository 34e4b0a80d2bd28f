"""Monte Carlo throughput: the vectorised simulator vs a naive one that enumerates every chip.

Setting: Chinchilla (H = 5.76e23), Table 1's a, f, T = T_m = 30 days, s from Eq. 1 (exact),
runs starting uniformly inside a period. The fast simulator runs at C = 10^7 and at the naive
baseline's C; the naive one (every chip of the stockpile materialised per trial) runs only at
the small C, in the same process, as the ratios' denominator. Best of --repeats wall times.
Usage: python benchmarks/bench_montecarlo.py [--trials 100000] [--naive-chips 100000]
       [--naive-trials 500] [--repeats 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

from computewatch.analysis import (
    MonteCarloResult,
    Setting,
    samples_exact,
    simulate,
    simulate_enumerating,
)

_CHINCHILLA_H = 5.76e23


def _best_time(run: Callable[[], MonteCarloResult], repeats: int) -> tuple[float, MonteCarloResult]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def _entry(seconds: float, result: MonteCarloResult, C: float, s: int) -> dict[str, object]:
    return {
        "C": C,
        "samples_per_period": s,
        "trials": result.trials,
        "seconds": seconds,
        "trials_per_s": result.trials / seconds,
        "estimate": result.estimate,
        "ci95": list(result.ci95),
        "closed_form_appendix_b": result.closed_form,
    }


def measure(trials: int, naive_chips: int, naive_trials: int, repeats: int) -> dict[str, object]:
    large = Setting(H=_CHINCHILLA_H, C=1e7)
    small = Setting(H=_CHINCHILLA_H, C=float(naive_chips))
    s_large, s_small = samples_exact(large), samples_exact(small)
    t_large, r_large = _best_time(lambda: simulate(large, s_large, trials, seed=1), repeats)
    t_fast, r_fast = _best_time(lambda: simulate(small, s_small, trials, seed=2), repeats)
    t_naive, r_naive = _best_time(lambda: simulate_enumerating(small, s_small, naive_trials, seed=3), repeats)
    naive_rate = naive_trials / t_naive
    return {
        "benchmark": "montecarlo",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "fast_C_1e7": _entry(t_large, r_large, 1e7, s_large),
        "fast_small_C": _entry(t_fast, r_fast, naive_chips, s_small),
        "naive_small_C": _entry(t_naive, r_naive, naive_chips, s_small),
        "ratio_fast_small_C_over_naive": (trials / t_fast) / naive_rate,
        "ratio_fast_C_1e7_over_naive_small_C": (trials / t_large) / naive_rate,
        # The naive cost grows linearly with C (it fills a C-long array per trial): an estimate.
        "naive_C_1e7_trials_per_s_extrapolated": naive_rate * naive_chips / 1e7,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--naive-chips", type=int, default=100_000)
    parser.add_argument("--naive-trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=argparse.FileType("w"), default="-", help="JSON destination (default stdout)")
    args = parser.parse_args(argv)
    result = measure(args.trials, args.naive_chips, args.naive_trials, args.repeats)
    json.dump(result, args.out, sort_keys=True, indent=2)
    args.out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
