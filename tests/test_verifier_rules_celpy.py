"""The shipped CEL policies and docs/rules.md's vectors, evaluated by a CEL implementation that is
not the one the Verifier uses (`cel-python`, pure Python, against `common-expression-language`,
Rust): the same context and functions give the same results on every run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import celpy
import pytest
from celpy import celtypes

from computewatch.verifier._cel import EvalError, Vocabulary, compile_cel, make_context
from computewatch.verifier._cel_functions import extension_functions
from computewatch.verifier.rules import _COMPUTE_KEYS, _NAMES, _PROGRAM_KEYS, Policy, RunFacts, _environment
from test_verifier_rules import EXAMPLES
from test_verifier_rules_legacy import _runs

ROOT = Path(__file__).resolve().parents[1]
_ENV = celpy.Environment()


def _celpy_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        value = fn(*args)
        if isinstance(value, bool):
            return celtypes.BoolType(value)
        return celtypes.DoubleType(value) if isinstance(value, float) else value

    return call


def _celpy(source: str, context: dict[str, Any], functions: dict[str, Callable[..., Any]]) -> bool | str:
    program = _ENV.program(_ENV.compile(source), functions={k: _celpy_function(f) for k, f in functions.items()})
    try:
        value = program.evaluate({name: celpy.json_to_cel(v) for name, v in context.items()})
    except Exception:
        return "error"
    return bool(value) if isinstance(value, celtypes.BoolType) else "error"


def _ours(expr: Any, context: dict[str, Any], functions: dict[str, Callable[..., Any]], unknown: Any) -> bool | str:
    try:
        return bool(expr.evaluate(make_context(context, functions), unknown))
    except EvalError:
        return "error"


@pytest.mark.parametrize("name", ["demo.toml", "example.toml"])
def test_shipped_policies_agree_with_cel_python(name: str) -> None:
    policy = Policy.load(EXAMPLES / name)
    compared, results = 0, set()
    for run in _runs()[::2] + _runs()[1::6]:
        context, unknown = _environment(run, policy.threshold_flops, policy.benchmarks)
        functions = extension_functions(run.data)
        for rule in policy.rules:
            context["approved"] = any(b.grants(run.run_id, run.prover, run.precommitment_digest) for b in policy.approvals + rule.approvals)
            for expr in (rule.when, rule.require):
                if expr is None:
                    continue
                ours = _ours(expr, context, functions, unknown)
                assert _celpy(expr.source, context, functions) == ours, (name, rule.id, expr.source, run)
                compared += 1
                results.add(ours)
    assert compared > 50 and results == {True, False, "error"}


def _vectors() -> list[tuple[str, str, str]]:
    doc = (ROOT / "docs" / "rules.md").read_text()
    section = doc.split("### CEL vectors", 1)[1].split("\n#", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return [(e.strip("| `").replace("\\|", "|"), c.strip(" `"), r.strip(" |`")) for e, c, r in rows]


def test_docs_cel_vectors_hold_in_both_implementations() -> None:
    vectors = _vectors()
    assert len(vectors) >= 8
    policy = Policy.from_toml('[policy]\nname = "v"\nversion = 3\nthreshold_flops = 1e12\n[benchmarks.final_loss]\nsamples = 1\n')
    runs = {
        "run A": RunFacts("run-a", 1_500_000_000_000, hyperparameters={"workload": {"optimizer": {"name": "AdamW", "lr": 3e-3}}, "note": None},
                          steps=200, lr=[3e-3, 1e-3], benchmarks={"final_loss": 1.25}, program={"kind": "custom", "uses": ["socket"], "imports": ["torch"]}),
        "run B": RunFacts("run-b", None, steps=10, lr=[], benchmarks={}, program=None),
    }
    vocabulary = Vocabulary(names=_NAMES, fixed_keys={"compute": _COMPUTE_KEYS, "benchmarks": frozenset({"final_loss"}), "program": _PROGRAM_KEYS})
    for expr, which, expected in vectors:
        run = runs[which]
        context, unknown = _environment(run, policy.threshold_flops, policy.benchmarks)
        functions = extension_functions(run.data)
        compiled = compile_cel(expr, vocabulary, None)
        ours = _ours(compiled, context, functions, unknown)
        assert str(ours).lower() == expected, (expr, ours)
        assert str(_celpy(expr, context, functions)).lower() == expected, (expr, "cel-python")
