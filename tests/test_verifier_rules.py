"""Policies: the paper's rule kinds, the 2H margin, CEL expressions and their safety, bad files.

Rules are written in CEL (policy version 3); test_verifier_rules_legacy.py covers versions 1 and 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import blake3_bytes
from computewatch.verifier._cel import MAX_DEPTH, MAX_LENGTH
from computewatch.verifier.rules import (
    OUTCOMES,
    Policy,
    RuleOutcome,
    RunFacts,
    rules_check,
)

H = 1e12
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "policies"

PROVER, DIGEST = "a1" * 32, "d1" * 32
_HEAD = f"""
[policy]
name = "test"
version = 3
threshold_flops = {H}
approvals = [{{run_id = "approved-run", prover = "{PROVER}", precommitment = "{DIGEST}"}}]

[data]
subset = 4

[benchmarks.final_loss]
samples = 8
"""

HP = {"workload": {"optimizer": {"name": "AdamW", "lr": 3e-3}, "tags": ["rl", "code"]}, "run": {"steps": 10}, "note": None}


def facts(flops: int | None = int(0.5 * H), **kw: Any) -> RunFacts:
    base: dict[str, Any] = {
        "run_id": "run-1",
        "total_flops": flops,
        "hyperparameters": HP,
        "steps": 10,
        "lr": [1e-3, 2e-3, 3e-3, 3e-3],
        "data": [b"def f(): pass", b"import os", b"\xff\xfe binary", b"exploit code here"],
        "benchmarks": {"final_loss": 1.5},
        "world_size": 2,
        "chips": 2,
        "prover": PROVER,
        "precommitment_digest": DIGEST,
    }
    base.update(kw)
    return RunFacts(**base)


def rule(kind: str, when: str | None = None, require: str | None = None, **extra: Any) -> str:
    lines = ["[[rules]]", f'id = "{extra.pop("id", "r")}"', f'kind = "{kind}"']
    if when is not None:
        lines.append(f"when = {when!r}")
    if require is not None:
        lines.append(f"require = {require!r}")
    for k, v in extra.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, list) else f"{k} = {v!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def policy(*rules: str, head: str = _HEAD) -> Policy:
    return Policy.from_toml(head + "".join(rules), source="test.toml")


def one(kind: str, when: str | None = None, require: str | None = None, f: RunFacts | None = None, **extra: Any) -> RuleOutcome:
    (out,) = policy(rule(kind, when, require, **extra)).evaluate(f or facts())
    return out


# -- rule kinds ---------------------------------------------------------------------------


def test_reporting_rule() -> None:
    out = one("reporting", "compute.over_threshold", text="tell the regulator", f=facts(int(3 * H)))
    assert (out.applies, out.outcome) == (True, "report") and "tell the regulator" in out.detail
    out = one("reporting", "compute.over_threshold", f=facts(int(0.5 * H)))
    assert (out.applies, out.outcome) == (False, "not-applicable")


def test_ban_rule() -> None:
    assert one("ban", "compute.detectable", f=facts(int(2 * H))).outcome == "violation"
    assert one("ban", "compute.detectable", f=facts(int(2 * H) - 1)).outcome == "not-applicable"
    assert one("ban").outcome == "violation"  # no `when`: the rule always applies


def test_approval_rule() -> None:
    big = int(5 * H)
    assert one("approval", "compute.over_threshold", f=facts(big)).outcome == "violation"
    assert one("approval", "compute.over_threshold", f=facts(big, run_id="approved-run")).outcome == "ok"
    # Approvals listed on the rule itself.
    bound = f'approvals = [{{run_id = "x", prover = "{PROVER}", precommitment = "{DIGEST}"}}]\n'
    (out,) = policy(rule("approval", "compute.over_threshold") + bound).evaluate(facts(big, run_id="x"))
    assert out.outcome == "ok"
    # Identity binding: the approved run id under another Prover key or precommitment is not approved.
    for other in ({"prover": "b2" * 32}, {"precommitment_digest": "e2" * 32}, {"prover": None}):
        out = one("approval", "compute.over_threshold", f=facts(big, run_id="approved-run", **other))
        assert out.outcome == "violation" and "bound to another Prover key or precommitment" in out.detail
    # A v1 approval by run id alone is read but approves nothing, and says why.
    out = one("approval", "compute.over_threshold", f=facts(big, run_id="x"), approvals=["x"])
    assert out.outcome == "violation" and "names the run id only" in out.detail
    # Conditional approval (§2.1): approved, but the condition does not hold.
    out = one("approval", "compute.over_threshold", "max(lr) <= 1e-3", f=facts(big, run_id="approved-run"))
    assert out.outcome == "violation" and "condition" in out.detail
    assert one("approval", "compute.over_threshold", f=facts(int(0.1 * H))).outcome == "not-applicable"
    # The `approved` fact is usable in any expression.
    assert one("requirement", require="approved", f=facts(run_id="approved-run")).outcome == "ok"
    assert one("requirement", require="approved").outcome == "violation"


def test_mitigation_rule() -> None:
    out = one("mitigation", "compute.over_threshold", "get(hp, 'safety_finetune', false)", f=facts(int(3 * H)))
    assert out.outcome == "violation" and "mitigation missing" in out.detail
    hp = {**HP, "safety_finetune": True}
    out = one("mitigation", "compute.over_threshold", "get(hp, 'safety_finetune', false)", f=facts(int(3 * H), hyperparameters=hp))
    assert out.outcome == "ok"
    assert one("mitigation", "compute.over_threshold", "false").outcome == "not-applicable"


def test_requirement_rule_and_compound_template() -> None:
    # "if trained on RL-for-code-generation for more than X FLOPs, then it must not be trained
    # beyond Y performance on Z benchmarks"
    when = "'rl' in hp.workload.tags && compute.flops > 0.5 * compute.H"
    require = "benchmarks.final_loss >= 1.2"
    assert one("requirement", when, require, f=facts(int(0.6 * H))).outcome == "ok"
    too_good = facts(int(0.6 * H), benchmarks={"final_loss": 0.9})
    out = one("requirement", when, require, f=too_good)
    assert (out.applies, out.outcome) == (True, "violation") and require in out.detail
    no_rl = facts(int(0.6 * H), benchmarks={"final_loss": 0.9}, hyperparameters={**HP, "workload": {"tags": []}})
    assert one("requirement", when, require, f=no_rl).outcome == "not-applicable"
    assert one("requirement", when, require, f=facts(int(0.4 * H), benchmarks={"final_loss": 0.9})).outcome == "not-applicable"


def test_outcome_json_is_the_contract() -> None:
    out = one("reporting", "compute.over_threshold", f=facts(int(3 * H))).to_json()
    assert set(out) == {"id", "run_id", "kind", "applies", "outcome", "detail"}
    assert out["run_id"] == "run-1" and out["kind"] == "reporting" and out["outcome"] in OUTCOMES


def test_rules_evaluate_in_order_with_run_id() -> None:
    p = policy(rule("reporting", "compute.over_threshold", id="a"), rule("ban", "false", id="b"))
    assert [(o.id, o.run_id) for o in p.evaluate(facts(run_id="zz"))] == [("a", "zz"), ("b", "zz")]


# -- the 2H margin (§3.2) -----------------------------------------------------------------


def test_compute_facts_and_the_2h_margin() -> None:
    p = policy(rule("ban", "compute.over_threshold", id="ban"), rule("requirement", require="steps > 0.0", id="plain"))
    between = p.evaluate(facts(int(1.5 * H)))
    assert between[0].outcome == "violation"  # judged by the rule, margin or not
    assert "margin" in between[0].detail and "2H" in between[0].detail and "1.50 H" in between[0].detail
    assert "margin" not in between[1].detail  # that rule does not look at compute
    for flops in (int(0.5 * H), int(2 * H), int(10 * H)):
        assert all("margin" not in o.detail for o in p.evaluate(facts(flops)))
    exact = {"flops": int(1.5 * H), "H": H, "ratio": 1.5, "over_threshold": True, "detectable": False}
    for key, value in exact.items():
        literal = str(value).lower() if isinstance(value, bool) else repr(value)
        assert one("requirement", require=f"compute.{key} == {literal}", f=facts(int(1.5 * H))).outcome == "ok", key


def test_unknown_flops_is_an_error_unless_decided_without_them() -> None:
    out = one("ban", "compute.over_threshold", f=facts(None))
    assert (out.outcome, out.applies) == ("error", False) and "FLOP count is unknown" in out.detail
    # CEL's `&&`/`||` absorb errors: a false conjunct decides, whatever the unknown one would be.
    assert one("ban", "compute.over_threshold && data_fraction('nothing-matches') > 0.0", f=facts(None)).outcome == "not-applicable"
    assert one("ban", "data_fraction('nothing-matches') > 0.0 || compute.over_threshold", f=facts(None)).outcome == "error"
    assert one("reporting", "compute.over_threshold || steps > 5.0", f=facts(None)).outcome == "report"
    assert one("requirement", require="compute.H == 1e12", f=facts(None)).outcome == "ok"  # H is always known


def test_rules_check_summarises_outcomes() -> None:
    p = policy(rule("reporting", "true", id="rep"), rule("ban", "compute.detectable", id="ban"))
    passed, detail = rules_check(p.evaluate(facts(int(0.1 * H))))
    assert passed is True and "rep (run-1)" in detail
    passed, detail = rules_check(p.evaluate(facts(int(3 * H))))
    assert passed is False and "ban (run-1)" in detail
    passed, detail = rules_check([o.to_json() for o in p.evaluate(facts(None))])
    assert passed is None and "ban (run-1)" in detail


# -- CEL expressions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "1e11 < compute.flops && compute.flops < 1e12 && 1e12 <= compute.H",
        "hp['workload']['optimizer']['lr'] == 3e-3 && hp.workload.optimizer.name == 'AdamW'",
        "hp.workload.tags[0] == 'rl' && hp.workload.tags[size(hp.workload.tags) - 1] == 'code' && size(hp.workload.tags) == 2",
        "'code' in hp.workload.tags && !('vision' in hp.workload.tags) && hp.workload.optimizer.name.contains('Adam')",
        "'optimizer' in hp.workload && hp.run.steps in [5.0, 10.0] && has(hp.run.steps) && !has(hp.note)",
        "max(lr) == 3e-3 && min(lr) == 1e-3 && max([1.0, 2.0, 3.0]) == 3.0 && abs(-2.0) == 2.0",
        "abs(sum(lr) - 9e-3) < 1e-12 && abs(mean(lr) - 2.25e-3) < 1e-12",
        "fraction_above(lr, 2e-3) == 0.5 && fraction_below(lr, 2e-3) == 0.25",
        "data_fraction('exploit') == 0.25 && data_fraction('(?i)DEF|IMPORT') == 0.5 && data_size() == 4.0",
        "data_fraction('\\xff\\xfe') == 0.0",  # bytes regex from a UTF-8 pattern: U+00FF is two bytes
        "hp.workload.optimizer.name.matches('^Adam') && !run_id.matches('x')",
        "get(hp, 'missing', 7.0) == 7.0 && get(hp, 'note', 'n') == 'n'",  # a null is absent
        "(compute.flops + 1.0) * 2.0 - 2.0 == 2.0 * compute.flops && compute.flops / compute.H == compute.ratio",
        "-steps < 0.0 && steps == 10.0 && steps > 5 && world_size == 2.0 && chips == 2.0 && run_id == 'run-1'",
        "benchmarks.final_loss > 1.0 && benchmarks['final_loss'] < 2.0",
        "lr.all(x, x <= 3e-3) && lr.exists(x, x == 1e-3) && lr.filter(x, x > 1e-3).size() == 3 && lr.exists_one(x, x == 2e-3)",
        "type(steps) == double && type(compute.flops) == double && type(hp.run.steps) == double && type(size(lr)) == int",
        "(compute.over_threshold ? 1.0 : 2.0) == 2.0 && double(size(lr)) / 2.0 == 2.0",
        "true",
    ],
)
def test_expressions_evaluate(expr: str) -> None:
    out = one("requirement", require=expr)
    assert out.outcome == "ok", out.detail


def test_the_context_is_typed_so_frontier_thresholds_read_naturally() -> None:
    # Every number in the context is a double: FLOPs beyond 2^63 and literals like 1e25 compare
    # directly, and an int literal still compares with a double (CEL's cross-type ordering).
    for expr, flops, outcome in [
        ("compute.flops > 1e25", 2 * 10**25, "ok"),
        ("compute.flops > 1e25", 10**24, "violation"),
        ("compute.flops >= 4.0 * compute.H", int(4 * H), "ok"),
        ("compute.flops > 100", 10**20, "ok"),
        ("compute.flops == 1500000000000", int(1.5 * H), "ok"),
    ]:
        assert one("requirement", require=expr, f=facts(flops)).outcome == outcome, expr


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("hp.workload.missing == 1.0", "no such key 'missing'"),
        ("hp.note == 1.0", "no such key 'note'"),  # a JSON null is absent, not a value
        ("hp.workload.optimizer.name > 1.0", "No such overload"),
        ("hp.run.steps", "not true/false"),
        ("max(hp.workload.tags) > 1.0", "max(): needs a number, got a string"),
        ("hp.run.steps + 'x' == 1.0", "Unsupported operation: float + string"),
        ("hp.workload.tags[5] == 'x'", "index out of bounds"),
        ("hp.workload.tags['a'] == 'x'", "Unexpected type"),
        ("!hp.run.steps", "No such overload"),
        ("hp.run.steps && true", "No such overload"),
        ("mean(hp.missing_list) > 0.0", "no such key 'missing_list'"),
        ("1 / 0 == 1", "division by zero"),
    ],
)
def test_evaluation_errors_are_error_outcomes(expr: str, message: str) -> None:
    out = one("requirement", require=expr)
    assert out.outcome == "error" and out.applies is True, out.detail
    assert message in out.detail and expr in out.detail and "\n" not in out.detail


def test_missing_facts_are_error_outcomes() -> None:
    assert "data_fraction(): the data subset was not drawn" in one("requirement", require="data_fraction('x') < 1.0", f=facts(data=None)).detail
    assert "empty" in one("requirement", require="data_fraction('x') < 1.0", f=facts(data=[])).detail
    out = one("requirement", require="benchmarks.final_loss > 1.0", f=facts(benchmarks={}))
    assert out.outcome == "error" and "benchmarks.final_loss is unknown (not computed by the trusted cluster)" in out.detail
    assert "empty list" in one("requirement", require="max(lr) < 1.0", f=facts(lr=[])).detail
    out = one("requirement", require="program.kind == 'template'", f=facts(program=None))
    assert out.outcome == "error" and "program.kind is unknown" in out.detail
    out = one("ban", "1 / 0 == 1")
    assert (out.outcome, out.applies) == ("error", False) and "`when`" in out.detail


def test_doubles_follow_ieee_754() -> None:
    # CEL doubles: a division by zero or an overflow is an infinity, not an error (docs/rules.md);
    # int arithmetic overflows and divides by zero as an error.
    assert one("requirement", require="steps / 0.0 > 1e308 && compute.flops * 1e300 * 1e300 > 1e308").outcome == "ok"
    assert one("requirement", require="9223372036854775807 + 1 > 0").outcome == "error"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("__import__('os') == 1", "names starting with '_' are refused"),
        ("hp.__class__ == 1", "names starting with '_' are refused"),
        ("lr.all(_x, _x > 0.0)", "names starting with '_' are refused"),
        ("open('/etc/passwd') == ''", "unknown function 'open'"),
        ("bogus(1.0) == 1.0", "unknown function 'bogus'"),
        ("os == 1", "unknown name 'os'"),
        ("compute.secret == 1.0", "compute has no key 'secret'"),
        ("benchmarks.mmlu > 1.0", "benchmarks has no key 'mmlu'"),
        ("benchmarks[run_id] > 1.0", "needs a literal key"),
        ("data_fraction(run_id) > 0.0", "literal string regex"),
        ("data_fraction(hp.pattern) > 0.0", "literal string regex"),
        ("data_fraction('(') > 0.0", "bad regex"),
        ("compute.flops > 4 * compute.H", "type error: No such overload"),
        ("run_id * 1000000000.0 == 'x'", "type error: Unsupported operation: string * float"),  # no huge string is built
        ("steps + 1 > 2.0", "type error"),
        ("steps && true", "type error"),
        ("program.kind > 1.0", "type error"),
        ("steps + 1.0", "does not evaluate to true/false"),
        ("'yes'", "does not evaluate to true/false"),
        ("steps >", "syntax error at column 8: mismatched input '<EOF>'"),
        ("max == 1.0", "unknown name 'max'"),
        ("steps === 1.0", "syntax error"),
        ("import os", "syntax error"),
        ("steps @ 1", "unexpected character '@'"),
        ("", "empty expression"),
        ("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1), "nested too deeply"),
        ("steps > " + "9" * MAX_LENGTH, f"longer than {MAX_LENGTH}"),
    ],
)
def test_unsafe_or_malformed_expressions_are_refused_at_load(expr: str, message: str) -> None:
    with pytest.raises(FormatError) as info:
        policy(rule("requirement", require=expr, id="bad-rule"))
    text = str(info.value)
    assert text.startswith("test.toml: rule 'bad-rule' require:") and message in text and "\n" not in text, text


# -- policy files -------------------------------------------------------------------------


def test_policy_fields_digest_and_requirements(tmp_path: Path) -> None:
    text = _HEAD + rule("reporting", "compute.over_threshold")
    path = tmp_path / "p.toml"
    path.write_text(text)
    p = Policy.load(path)
    assert (p.name, p.threshold_flops, [a.to_json() for a in p.approvals]) == ("test", H, [{"run_id": "approved-run", "prover": PROVER, "precommitment": DIGEST}])
    assert p.digest == blake3_bytes(path.read_bytes()).hex() == Policy.from_toml(text).digest
    assert Policy.from_toml(text + "# a comment\n").digest != p.digest  # the file's bytes, exactly
    assert p.requirements() == {"data_subset": 4, "benchmarks": {"final_loss": 8}}
    assert p.to_json() == {"name": "test", "digest": p.digest, "threshold_flops": H}
    bare = Policy.from_toml('[policy]\nname = "n"\nthreshold_flops = 5\n')
    assert bare.requirements() == {"data_subset": 0, "benchmarks": {}} and bare.evaluate(facts()) == []


_GOOD_RULE = rule("reporting", "compute.over_threshold")
_V3 = '[policy]\nname = "n"\nversion = 3\nthreshold_flops = 1\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy\nname=1", "malformed TOML"),
        (_GOOD_RULE, "missing the [policy] table"),
        ('[policy]\nthreshold_flops = 1e12\n', "[policy] name"),
        ('[policy]\nname = "n"\n', "threshold_flops"),
        ('[policy]\nname = "n"\nthreshold_flops = -1e12\n', "positive finite"),
        ('[policy]\nname = "n"\nthreshold_flops = 0\n', "positive finite"),
        ('[policy]\nname = "n"\nthreshold_flops = nan\n', "positive finite"),
        ('[policy]\nname = "n"\nthreshold_flops = inf\n', "positive finite"),
        ('[policy]\nname = "n"\nthreshold_flops = "1e12"\n', "positive finite"),
        ('[policy]\nname = "n"\nthreshold_flops = true\n', "positive finite"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\nversion = 4\n', "unsupported version"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\ncolour = "red"\n', "unknown key(s) 'colour'"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\napprovals = "x"\n', "approvals"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\n[extra]\n', "unknown key(s) 'extra'"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\n[data]\nsubset = 0\n', "[data] subset"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\n[data]\nsubset = true\n', "[data] subset"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\n[data]\nsize = 3\n', "unknown key(s) 'size'"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\n[benchmarks.x]\n', "[benchmarks.x] samples"),
        ('[policy]\nname = "n"\nthreshold_flops = 1\n[benchmarks."a b"]\nsamples = 1\n', "benchmark name"),
        ('rules = 3\n[policy]\nname = "n"\nthreshold_flops = 1\n', "array of tables"),
        (_V3 + rule("reporting", "true", colour="red"), "unknown key(s) 'colour'"),
        (_V3 + rule("embargo", "true"), "unknown kind 'embargo'"),
        (_V3 + rule("ban", "true", id="a b"), "id must be"),
        (_V3 + rule("ban", "true", "true"), "takes no `require`"),
        (_V3 + rule("mitigation", "true"), "needs `require`"),
        (_V3 + rule("ban", "true", approvals=["x"]), "approval rules only"),
        (_V3 + rule("ban", "true", id="d") + rule("ban", "false", id="d"),
         "duplicate rule id 'd'"),
        (_V3 + rule("ban", "data_fraction('x') > 0.0"), "needs a [data] table"),
        (_V3 + rule("ban", "bogus > 1.0"), "unknown name 'bogus'"),
    ],
)
def test_bad_policies_are_refused_naming_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        Policy.load(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value), str(info.value)


def test_unreadable_and_non_utf8_policies(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot read policy"):
        Policy.load(tmp_path / "missing.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[policy]\nname = "caf\xe9"\nthreshold_flops = 1\n')
    with pytest.raises(FormatError, match="not UTF-8"):
        Policy.load(path)


# -- shipped examples ---------------------------------------------------------------------


def test_example_policy_has_every_rule_kind() -> None:
    p = Policy.load(EXAMPLES / "example.toml")
    assert {r.kind for r in p.rules} == {"reporting", "approval", "ban", "mitigation", "requirement"}
    assert p.threshold_flops == 1e25
    chinchilla_280b = facts(int(9.9e24), hyperparameters={"objective": "rl-codegen"}, benchmarks={"final_loss": 1.0})
    by_id = {o.id: o for o in p.evaluate(chinchilla_280b)}
    assert by_id["rl-codegen-capability-cap"].outcome == "violation"  # the compound rule
    assert by_id["report-large-runs"].outcome == "not-applicable"
    huge = facts(int(5e25), lr=[1e-4], data=[b"shellcode"] * 3 + [b"x"], benchmarks={"final_loss": 2.0})
    by_id = {o.id: o for o in p.evaluate(huge)}
    assert by_id["report-large-runs"].outcome == "report"
    assert by_id["approve-frontier-runs"].outcome == "violation"  # not in the approvals
    assert by_id["ban-exploit-data-at-scale"].outcome == "violation"
    assert by_id["mandate-safety-finetune"].outcome == "violation"


def test_demo_policy_separates_the_demo_runs() -> None:
    p = Policy.load(EXAMPLES / "demo.toml")
    per_step = 1_610_612_736  # the tiny preset's matmul FLOPs per step (torch FlopCounterMode)
    hp = {"workload": {"optimizer": {"lr": 3e-3}}}
    data = [b"def f(x):\n    return x"] * 8 + [b"no keywords"] * 56
    base = {"hyperparameters": hp, "lr": [3e-3] * 4, "data": data, "benchmarks": {"final_loss": 2.0}}
    small = p.evaluate(facts(200 * per_step, **base))
    assert rules_check(small)[0] is True and not any(o.outcome == "report" for o in small)
    assert all("margin" not in o.detail for o in small)
    large = {o.id: o.outcome for o in p.evaluate(facts(600 * per_step, **base))}
    assert large["report-over-H"] == "report" and large["ban-over-2H"] == "violation"
    mid = {o.id: o for o in p.evaluate(facts(300 * per_step, **base))}
    assert mid["report-over-H"].outcome == "report" and "margin" in mid["report-over-H"].detail
    assert mid["ban-over-2H"].outcome == "not-applicable"


def test_rules_report_and_plots_do_not_load_prover_or_chip() -> None:
    code = (
        "import sys\n"
        "import computewatch.verifier.rules, computewatch.verifier.report, computewatch.verifier.plots\n"
        "bad = [m for m in sys.modules if m.startswith(('computewatch.prover', 'computewatch.chip'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_docs_cel_test_vector_matches_the_code() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "rules.md").read_text()
    section = doc.split("### Version 3 (CEL)", 1)[1].split("###", 1)[0]
    text = section.split("```toml\n", 1)[1].split("```", 1)[0]
    p = Policy.from_toml(text)
    assert f"has digest `{p.digest}`" in section and len(text.splitlines()) == 9
    (out,) = p.evaluate(RunFacts(run_id="run-1", total_flops=2500000000000))
    assert json.dumps(out.to_json()) in section.replace("\n", " ")
    (out,) = p.evaluate(RunFacts(run_id="run-1", total_flops=1500000000000))
    assert out.outcome == "not-applicable" and "margin" in out.detail


def test_docs_test_vector_matches_the_code() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "rules.md").read_text()
    section = doc.split("### Version 2 (legacy language", 1)[1]
    text = section.split("```toml\n", 1)[1].split("```", 1)[0]
    p = Policy.from_toml(text)
    assert f"has digest `{p.digest}`" in section
    (out,) = p.evaluate(RunFacts(run_id="run-1", total_flops=1500000000000))
    expected = '{"id": "report-over-H", "run_id": "run-1", "kind": "reporting", "applies": true, "outcome": "report"}'
    assert expected in section.replace("\n", " ")
    assert (out.id, out.run_id, out.kind, out.applies, out.outcome) == ("report-over-H", "run-1", "reporting", True, "report")
    assert "margin" in out.detail


# -- the language is not an attack surface (docs/rules.md) ---------------------------------


def test_policy_language_is_not_an_attack_surface() -> None:
    # Prover text is a value in the context, never expression text: CEL syntax in a run id or a
    # hyperparameter is a string that equals nothing the rule compares it with.
    injected = '" || true || "'
    assert one("requirement", require="run_id == 'approved'", f=facts(run_id=injected)).outcome == "violation"
    hp = {**HP, "objective": "x') || true || ('"}
    assert one("requirement", require="hp.objective == 'safe'", f=facts(hyperparameters=hp)).outcome == "violation"
    # A legacy literal holding quotes is re-escaped when translated, so it stays one string.
    expr = """run_id == 'a" || true || "b'"""
    legacy = f'[policy]\nname = "n"\nthreshold_flops = 1\n[[rules]]\nid = "r"\nkind = "requirement"\nrequire = {json.dumps(expr)}\n'
    assert Policy.from_toml(legacy).evaluate(facts(run_id="run-1"))[0].outcome == "violation"
    assert Policy.from_toml(legacy).evaluate(facts(run_id='a" || true || "b'))[0].outcome == "ok"
    # Type confusion by the Prover fails closed: a string where the rule expects a number is an
    # error (inconclusive) and a string "true" is not true.
    confused = {**HP, "workload": {"optimizer": {"lr": "0"}}, "safety_finetune": "true", "objective": ["rl"]}
    assert one("requirement", require="hp.workload.optimizer.lr <= 1e-2", f=facts(hyperparameters=confused)).outcome == "error"
    assert one("mitigation", "true", "hp.safety_finetune == true", f=facts(hyperparameters=confused)).outcome == "violation"
    # CEL's == across types is false, so a ban keyed on a claim guards its type (docs/rules.md).
    assert one("ban", "hp.objective == 'rl'", f=facts(hyperparameters=confused)).outcome == "not-applicable"
    assert one("ban", "type(hp.objective) != string || hp.objective == 'rl'", f=facts(hyperparameters=confused)).outcome == "violation"
    # A number beyond the double range is absent (an error where read), not a crash of the evaluation.
    huge = facts(hyperparameters={**HP, "big": 10**400, "nested": [10**400, 1.0]})
    assert one("requirement", require="hp.big > 1.0", f=huge).outcome == "error"
    assert one("requirement", require="hp.nested[1] == 1.0 && !has(hp.big)", f=huge).outcome == "ok"
    # A Prover-chosen regex never reaches Python's backtracking engine; CEL's matches() is RE2.
    with pytest.raises(FormatError, match="literal string regex"):
        policy(rule("ban", "data_fraction(hp.objective) > 0.0"))
    evil = {**HP, "pattern": "(a+)+$"}
    subject = "a" * 60 + "b"  # exponential for a backtracking engine
    out = one("requirement", require=f"!'{subject}'.matches(hp.pattern)", f=facts(hyperparameters=evil))
    assert out.outcome == "ok"  # linear time: RE2 does not backtrack
