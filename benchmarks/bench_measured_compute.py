"""The Verifier's measured compute on honest runs (issue 18): how the CPU-time figure compares
with an honest count, across workloads and repeats, on this (loaded) machine.

Each honest run (the demo presets, and a Lightning template run) is verified with `--segments
all` in the sandbox `--repeats` times, single-threaded. Per verification: the executor's count
per replayed step, the CPU seconds per replayed step of the executor's process tree (read by the
judge from /proc), the judge's reference rate (FLOPs per CPU second of a 256x256 matmul), the
efficiency an honest step reaches beyond the per-step allowance

    efficiency = counted / ((cpu_seconds - steps x OVERHEAD_S) x reference rate)

and measured / counted (a `compute` finding at 2: `verifier.measured`, docs/verifier.md).
`EFFICIENCY` must stay well below every honest efficiency, so that measured / counted stays well
below 2; the attack suite's `extra-passes-hidden-from-counter` shows how far above it hidden work
lands.

    python benchmarks/bench_measured_compute.py [--steps 8] [--repeats 3] [--workloads mlp tiny small lightning]

Prints JSON and writes benchmarks/results/bench_measured_compute.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _results import publish  # benchmarks/_results.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _train(name: str, out: Path, steps: int) -> Path:
    from computewatch.adversary.world import train_run

    if name != "lightning":
        return train_run(out, preset=name, steps=steps, checkpoint_every=4, threads=1, overrides={"corpus_bytes": 1 << 15})
    sys.path.insert(0, str(ROOT / "tests"))
    from test_lightning_template import _fit

    from computewatch.integrations.program.lightning_modules import CausalLM

    _fit(out, CausalLM(vocab_size=64, block_size=15, n_layer=1, n_head=2, n_embd=16, warmup_steps=2, total_steps=steps), steps)
    return out


def measure(workloads: list[str], steps: int, repeats: int) -> dict[str, Any]:
    from computewatch.adversary.world import verify_runs
    from computewatch.verifier.measured import EFFICIENCY, OVERHEAD_S

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in workloads:
            run = _train(name, Path(tmp) / name / "run", steps)
            for _ in range(repeats):
                doc = verify_runs([run], segments="all")
                c = doc["runs"][0]["compute"]
                if not c.get("executor_count"):
                    rows.append({"workload": name, "verdict": doc["verdict"], "error": [x["detail"][:200] for x in doc["checks"] if x["passed"] is False]})
                    continue
                m = c["measured"]
                n = m["replayed_steps"]
                beyond = m["cpu_seconds"] - n * OVERHEAD_S
                rows.append({"workload": name, "verdict": doc["verdict"], "counted_per_step": c["executor_count"] / doc["runs"][0]["steps"],
                             "cpu_seconds_per_step": m["cpu_seconds"] / n, "reference_flops_per_cpu_second": m["reference_flops_per_cpu_second"],
                             "efficiency": c["executor_count"] / doc["runs"][0]["steps"] * n / (beyond * m["reference_flops_per_cpu_second"]) if beyond > 0 else None,
                             "measured_over_counted": (m["flops"] or 0) / c["executor_count"], "load_average": os.getloadavg()[0]})
    by: dict[str, Any] = {}
    for name in workloads:
        mine = [r for r in rows if r["workload"] == name and "error" not in r]
        if not mine:
            continue
        by[name] = {"cpu_seconds_per_step_median": statistics.median(r["cpu_seconds_per_step"] for r in mine),
                    "max_measured_over_counted": max(r["measured_over_counted"] for r in mine),
                    "min_efficiency": min((r["efficiency"] for r in mine if r["efficiency"]), default=None)}
    return {"OVERHEAD_S": OVERHEAD_S, "EFFICIENCY": EFFICIENCY, "finding_at_measured_over_counted": 2.0, "by_workload": by, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["mlp", "tiny", "small", "lightning"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    publish("bench_measured_compute", measure(a.workloads, a.steps, a.repeats))


if __name__ == "__main__":
    main()
