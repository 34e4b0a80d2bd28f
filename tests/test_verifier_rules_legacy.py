"""Policies of versions 1 and 2 (the legacy expression language): still read, translated to CEL.

The legacy parser still refuses what it refused; every accepted expression is rewritten into CEL
and decided by the one CEL evaluator, with the same verdicts as the version 3 policies it maps to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from computewatch.crypto.errors import FormatError
from computewatch.verifier._expr import MAX_DEPTH, MAX_LENGTH, Vocabulary, parse
from computewatch.verifier._legacy import to_cel
from computewatch.verifier.rules import _FUNCTIONS, Policy, RunFacts, rules_check
from test_verifier_rules import EXAMPLES, H, facts, rule

ROOT = Path(__file__).resolve().parents[1]
LEGACY = Path(__file__).resolve().parent / "policies"

_BODY = f"""name = "test"
threshold_flops = {H}
approvals = [{{run_id = "approved-run", prover = "{"a1" * 32}", precommitment = "{"d1" * 32}"}}]

[data]
subset = 4

[benchmarks.final_loss]
samples = 8
"""
HEADS = {"unstated": "[policy]\n" + _BODY, "v1": "[policy]\nversion = 1\n" + _BODY, "v3": "[policy]\nversion = 3\n" + _BODY}


def one(expr: str, f: RunFacts | None = None, head: str = "unstated", kind: str = "requirement") -> Any:
    text = HEADS[head] + (rule(kind, require=expr) if kind == "requirement" else rule(kind, expr))
    (out,) = Policy.from_toml(text, source="test.toml").evaluate(f or facts())
    return out


# The expressions the legacy tests held true, in the legacy syntax: each still holds.
LEGACY_TRUE = [
    "1e11 < compute.flops < 1e12 <= compute.H",
    "hp['workload']['optimizer']['lr'] == 3e-3 and hp.workload.optimizer.name == 'AdamW'",
    "hp.workload.tags[0] == 'rl' and hp.workload.tags[-1] == 'code' and len(hp.workload.tags) == 2",
    "'code' in hp.workload.tags and 'vision' not in hp.workload.tags and 'Adam' in hp.workload.optimizer.name",
    "'optimizer' in hp.workload and hp.run.steps in [5, 10]",
    "max(lr) == 3e-3 and min(lr) == 1e-3 and max(1, 2, 3) == 3 and abs(-2) == 2",
    "abs(sum(lr) - 9e-3) < 1e-12 and abs(mean(lr) - 2.25e-3) < 1e-12",
    "fraction_above(lr, 2e-3) == 0.5 and fraction_below(lr, 2e-3) == 0.25",
    "data_fraction('exploit') == 0.25 and data_fraction('(?i)DEF|IMPORT') == 0.5 and data_size() == 4",
    "data_fraction('\\xff\\xfe') == 0",
    "matches(hp.workload.optimizer.name, '^Adam') and not matches(run_id, 'x')",
    "get(hp, 'missing', 7) == 7 and get(hp, 'note', 'n') == 'n'",
    "(compute.flops + 1) * 2 - 2 == 2 * compute.flops and compute.flops / compute.H == compute.ratio",
    "-steps < 0 and +steps == 10 and world_size == 2 and chips == 2 and run_id == 'run-1'",
    "benchmarks.final_loss > 1 and benchmarks['final_loss'] < 2",
    "'run' in run_id and 'x' not in run_id and 'workload' in hp",
    "True",
]


@pytest.mark.parametrize("expr", LEGACY_TRUE)
@pytest.mark.parametrize("head", ["unstated", "v1"])
def test_legacy_expressions_still_hold(expr: str, head: str) -> None:
    out = one(expr, head=head)
    assert out.outcome == "ok", out.detail
    # a negated copy is a violation, so the translation decides rather than always passing
    assert one(f"not ({expr})", head=head).outcome == "violation"


@pytest.mark.parametrize(
    "expr",
    [
        "hp.workload.missing == 1",
        "hp.note == 1",  # a JSON null: the legacy language called it unknown, CEL reads it as absent
        "hp.workload.optimizer.name > 1",
        "hp.run.steps",
        "max(hp.workload.tags) > 1",
        "hp.run.steps + 'x' == 1",
        "hp.workload.tags[5] == 1",
        "hp.workload.tags['a'] == 1",
        "steps.x == 1",
        "not steps",
        "steps and True",
        "mean(hp.missing_list) > 0",
        "len(steps) > 0",
        "run_id * 1000000000 == 'x'",
    ],
)
def test_legacy_evaluation_errors_are_still_error_outcomes(expr: str) -> None:
    out = one(expr)
    assert (out.outcome, out.applies) == ("error", True) and expr in out.detail, out.detail


def test_legacy_equality_across_kinds_stays_an_error() -> None:
    # CEL's == would be false here and let a mistyped claim slip past the ban; the legacy meaning holds.
    confused = facts(hyperparameters={"objective": ["rl"], "flag": "true"})
    out = one("hp.objective == 'rl'", confused, kind="ban")
    assert (out.outcome, out.applies) == ("error", False) and "cannot compare a list with a string using '=='" in out.detail
    assert one("hp.flag != True", confused).outcome == "error"
    assert one("hp.objective == ['rl'] and 1 == 1.0 and steps != 11", confused).outcome == "ok"


def test_legacy_unknown_facts_and_kleene_logic() -> None:
    out = one("compute.over_threshold", facts(None), kind="ban")
    assert (out.outcome, out.applies) == ("error", False) and "compute.over_threshold is unknown" in out.detail
    assert one("compute.over_threshold and data_fraction('nothing-matches') > 0", facts(None), kind="ban").outcome == "not-applicable"
    assert one("compute.over_threshold or steps > 5", facts(None), kind="reporting").outcome == "report"
    assert "benchmarks.final_loss is unknown" in one("benchmarks.final_loss > 1", facts(benchmarks={})).detail


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("__import__('os') == 1", "unknown function '__import__'"),
        ("hp.__class__ == 1", "names starting with '_'"),
        ("hp.get('x') == 1", "only named functions"),
        ("os == 1", "unknown name 'os'"),
        ("2 ** 100000 > 1", "operator Pow"),
        ("1e999 > 1", "not finite"),
        ("(lambda: 1)() == 1", "lambda"),
        ("[x for x in lr] == []", "comprehension"),
        ("steps is None", "comparison Is"),
        ("max() > 1", "takes 1 to 16"),
        ("data_fraction(run_id) > 0", "literal string regex"),
        ("compute.secret == 1", "compute has no key 'secret'"),
        ("steps + 1", "does not evaluate to true/false"),
        ("steps >", "syntax error"),
        ("steps && true", "syntax error"),  # CEL syntax is not the legacy language
        ("not " * (MAX_DEPTH + 1) + "True", "nested too deeply"),
        ("steps > " + "9" * MAX_LENGTH, f"longer than {MAX_LENGTH}"),
        ("matches(run_id, '(?<=a)b')", "not RE2 syntax"),  # CEL's matches() is RE2: refused at load, not misread
    ],
)
def test_legacy_refusals_still_hold(expr: str, message: str) -> None:
    with pytest.raises(FormatError) as info:
        Policy.from_toml(HEADS["unstated"] + rule("requirement", require=expr, id="bad"), source="test.toml")
    assert str(info.value).startswith("test.toml: rule 'bad' require:") and message in str(info.value), str(info.value)


def test_cel_text_in_a_legacy_policy_is_refused_and_legacy_text_in_a_cel_policy_too() -> None:
    with pytest.raises(FormatError, match="syntax error"):
        Policy.from_toml(HEADS["unstated"] + rule("ban", "compute.over_threshold && true"))
    with pytest.raises(FormatError, match="syntax error at column 24: mismatched input 'and'"):
        Policy.from_toml(HEADS["v3"] + rule("ban", "compute.over_threshold and True"))


_VOCABULARY = Vocabulary(
    names=frozenset({"run_id", "compute", "hp", "steps", "lr", "program"}),
    fixed_keys={"compute": frozenset({"flops", "H"}), "program": frozenset({"uses", "kind"})},
    functions=_FUNCTIONS,
)


@pytest.mark.parametrize(
    ("legacy", "cel_text"),
    [  # docs/rules.md, "Legacy expressions": these vectors are the translation's contract
        ("compute.flops >= 4 * compute.H", "(compute.flops >= (4.0 * compute.H))"),
        ("1e11 < compute.flops < 1e12", "((100000000000.0 < compute.flops) && (compute.flops < 1000000000000.0))"),
        ("steps > 0 and not (lr[0] > 1e-2 or lr[-1] > 1e-2)", "((steps > 0.0) && !((lr[0] > 0.01) || (lr[size(lr) - 1] > 0.01)))"),
        ("'AdamW' in ['AdamW', 'Adam']", '("AdamW" in ["AdamW", "Adam"])'),
        ("'socket' not in program.uses", '!("socket" in program.uses)'),
        ("'x' in run_id", '(type(run_id) == string ? run_id.contains("x") : "x" in run_id)'),
        ("len(hp.tags) == 2 and max(1, steps) == steps", "(legacy_equal(double(size(hp.tags)), 2.0) && legacy_equal(max([1.0, steps]), steps))"),
        ("matches(run_id, '^a\"b') and get(hp, 'k', True) == True", '(run_id.matches("^a\\"b") && legacy_equal(get(hp, "k", true), true))'),
        ("hp['lr-max'] > +1", '(hp["lr-max"] > (0.0 + 1.0))'),
    ],
)
def test_translation_vectors(legacy: str, cel_text: str) -> None:
    assert to_cel(parse(legacy, _VOCABULARY)) == cel_text


def test_documented_translation_vectors_are_the_code() -> None:
    doc = (ROOT / "docs" / "rules.md").read_text()
    section = doc.split("### Legacy expressions", 1)[1].split("\n## ", 1)[0]
    rows = [re.split(r"(?<!\\)\|", line)[1:3] for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 5
    for legacy, cel_text in rows:
        assert to_cel(parse(legacy.strip().strip("`"), _VOCABULARY)) == cel_text.strip().strip("`").replace("\\|", "|"), legacy


# -- the shipped policies: a legacy copy and its CEL version give the same verdicts ---------

PER_STEP = 1_610_612_736  # the tiny preset's FLOPs per step (test_verifier_rules)


def _runs() -> list[RunFacts]:
    code = [b"def f(x):\n    return x"] * 8 + [b"no keywords"] * 56
    prose = [b"no keywords at all"] * 64
    out = []
    for flops in (None, 10**9, 200 * PER_STEP, 300 * PER_STEP, 600 * PER_STEP, int(9.9e24), int(3e25), int(5e25)):
        for hp, lr, data, loss in [
            ({"workload": {"optimizer": {"lr": 3e-3}}}, [3e-3] * 4, code, 2.0),
            ({"workload": {"optimizer": {"lr": 5e-2}}, "objective": "rl-codegen", "safety_finetune": True}, [1e-4, 5e-2], prose, 0.3),
            ({"objective": "rl-codegen", "safety_finetune": False}, [1e-4], [b"shellcode"] * 3 + [b"x"], 1.0),
        ]:
            out.append(facts(flops, hyperparameters=hp, lr=lr, data=data, benchmarks={"final_loss": loss}))
            out.append(facts(flops, hyperparameters=hp, lr=lr, data=None, benchmarks={}))
    return out


@pytest.mark.parametrize(("legacy", "current"), [("demo_v1.toml", "demo.toml"), ("example_v2.toml", "example.toml")])
def test_legacy_policy_copies_give_the_same_verdicts_as_their_cel_versions(legacy: str, current: str) -> None:
    old, new = Policy.load(LEGACY / legacy), Policy.load(EXAMPLES / current)
    assert [r.id for r in old.rules] == [r.id for r in new.rules] and old.digest != new.digest
    seen: set[str] = set()
    for run in _runs():
        a, b = old.evaluate(run), new.evaluate(run)
        assert [(o.id, o.applies, o.outcome) for o in a] == [(o.id, o.applies, o.outcome) for o in b], run
        assert rules_check(a)[0] == rules_check(b)[0]
        seen.update(o.outcome for o in b)
    assert {"ok", "violation", "not-applicable", "error"} <= seen  # the runs exercise every branch
