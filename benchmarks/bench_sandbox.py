"""The sandbox's cost: replay wall time of the same honest run with and without bubblewrap (issue 17).

One honest run (the tiny MLP, `--steps` steps, a checkpoint every 4) is verified with
`--segments all` twice per round, once in the bubblewrap sandbox and once with
`--unsafe-no-sandbox` (the executor as a plain child process, same limits), in alternating order
so that the machine's load falls on both alike. Both start one warm executor for the run; the
difference is bubblewrap's start-up and the namespaces. The ratio is median(sandboxed) /
median(unsandboxed) over `--rounds` rounds; the target is under 1.10.

    python benchmarks/bench_sandbox.py [--steps 64] [--rounds 5] [--nproc 1]

Prints JSON and writes benchmarks/results/bench_sandbox.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import publish  # benchmarks/_results.py (this script's folder is on sys.path)
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def measure(steps: int, rounds: int, nproc: int) -> dict[str, Any]:
    from _runs import failed, honest_run, run_verify

    from computewatch.verifier.sandbox import sandbox_problem

    problem = sandbox_problem()
    if problem is not None:
        return {"error": f"no sandbox on this machine: {problem}"}
    times: dict[str, list[float]] = {"sandbox": [], "no_sandbox": []}
    with tempfile.TemporaryDirectory() as tmp:
        run = honest_run(Path(tmp) / "run", steps=steps, checkpoint_every=4, nproc=nproc)
        for r in range(rounds):
            order = ("sandbox", "no_sandbox") if r % 2 == 0 else ("no_sandbox", "sandbox")
            for kind in order:
                t0 = time.perf_counter()
                doc = run_verify(run, segments="all", sandbox=kind == "sandbox")
                times[kind].append(time.perf_counter() - t0)
                if doc["verdict"] != "compliant":
                    return {"error": f"the honest run is not compliant ({kind}): {failed(doc)}"}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "steps": steps,
        "ranks": nproc,
        "rounds": rounds,
        "seconds": times,
        "median_seconds": med,
        "ratio": med["sandbox"] / med["no_sandbox"],
        "overhead_percent": 100 * (med["sandbox"] / med["no_sandbox"] - 1),
        "target_ratio": 1.10,
    }


def bwrap_start(repeats: int = 20) -> dict[str, float]:
    """bubblewrap's own start-up: `true` with the executor's namespaces and binds, against `true`."""
    import os
    import subprocess

    from computewatch.verifier.sandbox import _base_args, find_bwrap

    bwrap = find_bwrap()
    if bwrap is None:
        return {}
    wrapped = [*_base_args(bwrap, as_root=os.geteuid() == 0), "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "/usr/bin/true"]
    out: dict[str, list[float]] = {"bare": [], "bwrap": []}
    for _ in range(repeats):
        for kind, cmd in (("bare", ["/usr/bin/true"]), ("bwrap", wrapped)):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            out[kind].append(time.perf_counter() - t0)
    return {f"{k}_ms": 1000 * statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=1)
    args = parser.parse_args()
    result = measure(args.steps, args.rounds, args.nproc)
    result["process_start"] = bwrap_start()
    publish("bench_sandbox", result)


if __name__ == "__main__":
    main()
