"""The policy engine's speed with CEL: loading (parse, checks, compile, the probe evaluation) and
evaluating a policy on one run, against a second CEL implementation and plain Python, measured in
the same process.

Timed, --rounds times each, interleaved, median round reported:
- load: `Policy.from_bytes` of examples/policies/demo.toml and example.toml (CEL, version 3) and of
  the legacy copy tests/policies/demo_v1.toml (parsed, translated to CEL);
- evaluate: `Policy.evaluate` of demo.toml on one run with --steps learning rates and a 64-sample
  data subset (`common-expression-language`, the engine the Verifier uses);
- cel-python: the same rule expressions, context and functions evaluated by `cel-python`
  (compiled once, outside the timing; the context built and converted per run, as for the
  engine), the second implementation of the cross-check test;
- python: the same five predicates written as plain Python over the same values (the floor).
Reported: milliseconds per load and per evaluated run, and the ratios evaluate / python and
cel-python / evaluate.

Usage: python benchmarks/bench_policy_cel.py [--rounds 7] [--steps 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import publish  # noqa: E402

from computewatch.verifier._cel_functions import extension_functions  # noqa: E402
from computewatch.verifier.rules import Policy, RunFacts, _environment  # noqa: E402


def _median_ms(fn: Callable[[], Any], rounds: int, repeat: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - start) / repeat)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()

    texts = {name: path.read_bytes() for name, path in {
        "demo.toml": ROOT / "examples" / "policies" / "demo.toml",
        "example.toml": ROOT / "examples" / "policies" / "example.toml",
        "demo_v1.toml (legacy)": ROOT / "tests" / "policies" / "demo_v1.toml",
    }.items()}
    policy = Policy.from_bytes(texts["demo.toml"])
    data = [b"def f(x):\n    return x"] * 8 + [b"no keywords"] * 56
    run = RunFacts("run-1", 600 * 1_610_612_736, hyperparameters={"workload": {"optimizer": {"lr": 3e-3}}},
                   steps=args.steps, lr=[3e-3] * args.steps, data=data, benchmarks={"final_loss": 2.0})

    import celpy

    env = celpy.Environment()
    functions = extension_functions(run.data)
    programs = [env.program(env.compile(e.source), functions=functions) for r in policy.rules for e in (r.when, r.require) if e is not None]

    def celpy_run() -> None:  # the context is built and converted per run, as `Policy.evaluate` does
        context, _ = _environment(run, policy.threshold_flops, policy.benchmarks)
        activation = {k: celpy.json_to_cel(v) for k, v in context.items()}
        for program in programs:
            program.evaluate(activation)

    def python_run() -> None:
        h, flops = policy.threshold_flops, float(run.total_flops or 0)
        rx = [s for s in run.data or [] if b"def " in s or b"import " in s or b"return " in s]
        loss = run.benchmarks["final_loss"]
        _ = (flops >= h, flops >= 2 * h, run.hyperparameters["workload"]["optimizer"]["lr"] <= 1e-2 and max(run.lr) <= 1e-2,
             len(rx) / len(data) > 0.02, flops > 0.5 * h and loss is not None and loss > 0.5)

    def loader(raw: bytes) -> Callable[[], Any]:
        return lambda: Policy.from_bytes(raw)

    loads = {name: _median_ms(loader(raw), args.rounds, 5) for name, raw in texts.items()}
    evaluate = _median_ms(lambda: policy.evaluate(run), args.rounds, 20)
    celpy_ms = _median_ms(celpy_run, args.rounds, 1)
    python_ms = _median_ms(python_run, args.rounds, 200)
    publish("policy_cel", {
        "steps": args.steps,
        "rules": len(policy.rules),
        "load_ms": {k: round(v, 3) for k, v in loads.items()},
        "evaluate_ms_per_run": round(evaluate, 4),
        "cel_python_ms_per_run": round(celpy_ms, 3),
        "python_ms_per_run": round(python_ms, 4),
        "evaluate_over_python": round(evaluate / python_ms, 1),
        "cel_python_over_evaluate": round(celpy_ms / evaluate, 1),
    })


if __name__ == "__main__":
    main()
