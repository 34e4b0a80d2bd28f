"""Rules: a TOML policy of the paper's rule kinds, evaluated on a verified run's facts (docs/rules.md).

Paper §2.1: reporting requirements, bans or approval requirements, mandated mitigations, over
total compute, properties of the training data, hyperparameters and benchmark results of the
final weights, and their combinations ("if trained on ... for more than X FLOPs, then it must
not be trained beyond Y performance on Z benchmarks"). §3.2: inspection guarantees hold for runs
of at least 2H, so an outcome on a run between H and 2H says so.

Appendix D step 6: the trusted cluster computes the facts (a random data subset, benchmarks on
the final weights) and returns only each rule's outcome, never the values behind it: details
name the rule and which condition decided it, not the benchmark or data figures.

Conditions are CEL expressions (policy version 3, verifier/_cel.py) evaluated on a context the
Verifier builds from its own measurements; a version 1 or 2 policy's expressions are parsed by
the legacy parser (verifier/_expr.py) and translated to CEL (verifier/_legacy.py).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computewatch.crypto.errors import FormatError
from computewatch.crypto.digest import blake3_bytes
from computewatch.verifier.binding import RunBinding
from computewatch.verifier._cel import (
    CelExpr,
    EvalError,
    ExprError,
    Unknown,
    Vocabulary,
    compile_cel,
    make_context,
)
from computewatch.verifier._cel_functions import context_value, extension_functions
from computewatch.verifier._expr import Signature, parse
from computewatch.verifier._expr import Vocabulary as LegacyVocabulary
from computewatch.verifier._legacy import to_cel

__all__ = [
    "KINDS",
    "OUTCOMES",
    "POLICY_VERSION",
    "Policy",
    "Rule",
    "RuleOutcome",
    "RunFacts",
    "rules_check",
]

# v2: approvals may be bound tables {run_id, prover, precommitment}; a v1 approval (a run id
# alone) is still read but approves nothing (docs/rules.md, "Approvals").
# v3: expressions in CEL (verifier/_cel.py); v1 and v2 expressions are translated to CEL at load.
POLICY_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
_UNSTATED_VERSION = 2  # a file without `version` was written for the legacy language
KINDS = ("reporting", "ban", "approval", "mitigation", "requirement")
OUTCOMES = ("ok", "violation", "report", "not-applicable", "error")

_NAMES = frozenset({"run_id", "compute", "hp", "steps", "lr", "world_size", "chips", "benchmarks", "approved", "program"})
# program.kind: "template" | "custom"; program.template: the template's name ("" if custom);
# program.uses: the scan's categories (verifier/program_scan.py); program.imports: top-level modules.
_PROGRAM_KEYS = frozenset({"kind", "template", "uses", "imports"})
_COMPUTE_KEYS = frozenset({"flops", "H", "ratio", "over_threshold", "detectable"})
_DATA_FUNCTIONS = frozenset({"data_fraction", "data_size"})
_FUNCTIONS: dict[str, Signature] = {
    "min": Signature(1, 16),
    "max": Signature(1, 16),
    "abs": Signature(1, 1),
    "len": Signature(1, 1),
    "sum": Signature(1, 1),
    "mean": Signature(1, 1),
    "fraction_above": Signature(2, 2),
    "fraction_below": Signature(2, 2),
    "get": Signature(3, 3),
    "matches": Signature(2, 2, regex_arg=1),
    "data_fraction": Signature(1, 1, regex_arg=0),
    "data_size": Signature(0, 0),
}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BENCHMARK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_MAX_SUBSET = 10_000_000
_TOP_KEYS = {"policy", "data", "benchmarks", "rules"}
_POLICY_KEYS = {"name", "version", "description", "threshold_flops", "approvals"}
_RULE_KEYS = {"id", "kind", "when", "require", "text", "approvals"}
# Which kinds take a `require` expression: True required, False refused, None optional.
_REQUIRE = {"reporting": False, "ban": False, "approval": None, "mitigation": True, "requirement": True}


@dataclass(frozen=True)
class RunFacts:
    """What the trusted cluster established about one verified run (the rules' inputs).

    `total_flops` is None when the FLOP count is unknown (an op the counter does not know);
    `data` is the random subset of sample bytes the cluster drew with the Verifier's secret
    seed (None: not drawn); `benchmarks` maps a policy's benchmark names to their values on the
    final weights (a missing name: not computed).
    """

    run_id: str
    total_flops: int | None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 0
    lr: Sequence[float] = ()
    data: Sequence[bytes] | None = None
    benchmarks: Mapping[str, float | None] = field(default_factory=dict)
    world_size: int = 1
    chips: int = 1
    prover: str | None = None  # key id of the pinned key the run's manifest verifies under
    precommitment_digest: str | None = None  # hex digest of the run's precommitment
    program: Mapping[str, Any] | None = None  # verifier/program_scan.program_facts (None: not established)


@dataclass(frozen=True)
class RuleOutcome:
    """One rule on one run; `to_json` is a RuleOutcome of the verdict document's "rules" list."""

    id: str
    run_id: str
    kind: str
    applies: bool
    outcome: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "kind": self.kind,
            "applies": self.applies,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Rule:
    """One checked [[rules]] entry."""

    id: str
    kind: str
    when: CelExpr | None
    require: CelExpr | None
    text: str
    approvals: tuple[RunBinding, ...]

    @property
    def uses_compute(self) -> bool:
        return any(e is not None and "compute" in e.names for e in (self.when, self.require))


def _fail(source: str, where: str, problem: str) -> FormatError:
    return FormatError(f"{source}: {where}: {problem}")


def _table(value: Any, source: str, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(source, where, f"must be a table, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(source, where, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}")
    return value


def _string(value: Any, source: str, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise _fail(source, where, "must be a non-empty string" if not empty else "must be a string")
    return value


def _count(value: Any, source: str, where: str, *, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise _fail(source, where, f"must be an integer from 1 to {upper}, got {value!r}")
    return value


class Policy:
    """A parsed, checked policy. Build with `Policy.load(path)` or `Policy.from_toml(text)`."""

    def __init__(
        self,
        *,
        name: str,
        threshold_flops: float,
        rules: tuple[Rule, ...],
        approvals: tuple[RunBinding, ...],
        data_subset: int,
        benchmarks: Mapping[str, int],
        digest: str,
        description: str = "",
        source: str = "<policy>",
    ) -> None:
        self.name = name
        self.threshold_flops = threshold_flops
        self.rules = rules
        self.approvals = approvals
        self.data_subset = data_subset
        self.benchmarks = dict(benchmarks)
        self.digest = digest
        self.description = description
        self.source = source

    def __repr__(self) -> str:
        return f"Policy(name={self.name!r}, H={self.threshold_flops:g}, rules={len(self.rules)}, digest={self.digest[:16]})"

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a TOML policy file; FormatError names the file and the problem."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise FormatError(f"{path}: cannot read policy: {exc.strerror or exc}") from None
        return cls.from_bytes(raw, source=str(path))

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<policy>") -> Policy:
        return cls.from_bytes(text.encode("utf-8"), source=source)

    @classmethod
    def from_bytes(cls, raw: bytes, *, source: str = "<policy>") -> Policy:
        """Parse policy bytes (UTF-8 TOML); `digest` is BLAKE3-256 over exactly these bytes."""
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise FormatError(f"{source}: not UTF-8 text (byte {exc.start})") from None
        except tomllib.TOMLDecodeError as exc:
            raise FormatError(f"{source}: malformed TOML: {exc}") from None
        _table(doc, source, "top level", _TOP_KEYS)
        if "policy" not in doc:
            raise _fail(source, "top level", "missing the [policy] table")
        head = _table(doc["policy"], source, "[policy]", _POLICY_KEYS)
        version = head.get("version", _UNSTATED_VERSION)
        if version not in _READABLE_VERSIONS or isinstance(version, bool):
            raise _fail(source, "[policy] version", f"unsupported version {version!r} (this reader knows {', '.join(map(str, _READABLE_VERSIONS))})")
        name = _string(head.get("name"), source, "[policy] name")
        h = head.get("threshold_flops")
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
            raise _fail(source, "[policy] threshold_flops", f"H must be a positive finite number of FLOPs, got {h!r}")
        approvals = _approvals(head.get("approvals", []), source, "[policy] approvals")
        description = _string(head.get("description", ""), source, "[policy] description", empty=True)

        data_subset = 0
        if "data" in doc:
            data = _table(doc["data"], source, "[data]", {"subset"})
            data_subset = _count(data.get("subset"), source, "[data] subset", upper=_MAX_SUBSET)

        benchmarks: dict[str, int] = {}
        for bname, spec in _table(doc.get("benchmarks", {}), source, "[benchmarks]", set(doc.get("benchmarks", {}))).items():
            if not _BENCHMARK_NAME.fullmatch(bname):
                raise _fail(source, f"[benchmarks.{bname}]", "a benchmark name is a letter then letters, digits or '_'")
            spec = _table(spec, source, f"[benchmarks.{bname}]", {"samples", "description"})
            benchmarks[bname] = _count(spec.get("samples"), source, f"[benchmarks.{bname}] samples", upper=_MAX_SUBSET)
            _string(spec.get("description", ""), source, f"[benchmarks.{bname}] description", empty=True)

        fixed_keys = {"compute": _COMPUTE_KEYS, "benchmarks": frozenset(benchmarks), "program": _PROGRAM_KEYS}
        language = _Language(
            version=version,
            cel=Vocabulary(names=_NAMES, fixed_keys=fixed_keys),
            legacy=LegacyVocabulary(names=_NAMES, fixed_keys=fixed_keys, functions=_FUNCTIONS),
            probe=_probe_context(h, benchmarks),
        )
        rules_doc = doc.get("rules", [])
        if not isinstance(rules_doc, list):
            raise _fail(source, "rules", "must be an array of tables ([[rules]])")
        rules: list[Rule] = []
        seen: set[str] = set()
        for i, entry in enumerate(rules_doc):
            rule = _rule(entry, i, source, language, data_subset)
            if rule.id in seen:
                raise _fail(source, f"rules[{i}]", f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            rules.append(rule)
        return cls(
            name=name,
            threshold_flops=h,
            rules=tuple(rules),
            approvals=approvals,
            data_subset=data_subset,
            benchmarks=benchmarks,
            digest=blake3_bytes(raw).hex(),
            description=description,
            source=source,
        )

    # -- use -----------------------------------------------------------------------------
    def requirements(self) -> dict[str, Any]:
        """What the trusted cluster must compute for `evaluate`, as JSON (it crosses into the
        cluster's process): {"data_subset": samples to draw at random (0: none),
        "benchmarks": {name: samples to evaluate the final weights on}}."""
        return {"data_subset": self.data_subset, "benchmarks": dict(self.benchmarks)}

    def to_json(self) -> dict[str, Any]:
        """The verdict's "policy" object: name and digest, plus H for the compute plot."""
        return {"name": self.name, "digest": self.digest, "threshold_flops": self.threshold_flops}

    def evaluate(self, facts: RunFacts) -> list[RuleOutcome]:
        """Every rule's outcome on one run, in policy order."""
        env, unknown = _environment(facts, self.threshold_flops, self.benchmarks)
        used = {n for r in self.rules for e in (r.when, r.require) if e is not None for n in e.names}
        # only the facts some rule reads: converting a long `lr` list into CEL costs milliseconds
        context = make_context({k: v for k, v in env.items() if k in used}, extension_functions(facts.data))
        margin = _margin_note(facts.total_flops, self.threshold_flops)
        outcomes = []
        for rule in self.rules:
            held = self.approvals + rule.approvals
            approved = any(b.grants(facts.run_id, facts.prover, facts.precommitment_digest) for b in held)
            context.add_variable("approved", approved)
            outcome = _evaluate_rule(rule, facts.run_id, _Facts(context, approved, unknown))
            if rule.kind == "approval" and outcome.outcome == "violation" and not approved:
                outcome = dataclasses.replace(outcome, detail=outcome.detail + _unbound_note(facts, held))
            if margin and rule.uses_compute and outcome.outcome != "error":
                outcome = dataclasses.replace(outcome, detail=f"{outcome.detail}; {margin}")
            outcomes.append(outcome)
        return outcomes


@dataclass(frozen=True)
class _Language:
    """How a policy's expressions are read: CEL (v3) or the legacy language translated to CEL."""

    version: int
    cel: Vocabulary
    legacy: LegacyVocabulary
    probe: tuple[dict[str, Any], dict[str, Callable[..., Any]]]

    def compile(self, text: Any) -> CelExpr:
        if self.version >= 3:
            return compile_cel(text, self.cel, self.probe)
        legacy = parse(text, self.legacy)
        return compile_cel(to_cel(legacy), self.cel, None, shown=legacy.source, legacy=True)


@dataclass(frozen=True)
class _Facts:
    """One run's evaluation context: CEL variables, our functions, the facts that have no value."""

    context: Any  # a cel.Context (verifier/_cel.py, make_context)
    approved: bool
    unknown: tuple[Unknown, ...]


def _rule(entry: Any, i: int, source: str, language: _Language, data_subset: int) -> Rule:
    where = f"rules[{i}]"
    entry = _table(entry, source, where, _RULE_KEYS)
    rid = entry.get("id")
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        raise _fail(source, where, f"id must be 1-64 of letters, digits, '.', '_', '-' (starting alphanumeric), got {rid!r}")
    where = f"rule {rid!r}"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise _fail(source, where, f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    need = _REQUIRE[kind]
    if need is True and "require" not in entry:
        raise _fail(source, where, f"a {kind} rule needs `require` (what must hold when `when` does)")
    if need is False and "require" in entry:
        raise _fail(source, where, f"a {kind} rule takes no `require`; put the condition in `when`")
    if "approvals" in entry and kind != "approval":
        raise _fail(source, where, "`approvals` belongs to approval rules only")

    def expression(key: str) -> CelExpr | None:
        if key not in entry:
            return None
        try:
            expr = language.compile(entry[key])
        except ExprError as exc:
            raise _fail(source, f"{where} {key}", str(exc)) from None
        if expr.functions & _DATA_FUNCTIONS and not data_subset:
            used = ", ".join(sorted(expr.functions & _DATA_FUNCTIONS))
            raise _fail(source, f"{where} {key}", f"{used}() needs a [data] table with `subset` (samples to draw)")
        return expr

    return Rule(
        id=rid,
        kind=kind,
        when=expression("when"),
        require=expression("require"),
        text=_string(entry.get("text", ""), source, f"{where} text", empty=True),
        approvals=_approvals(entry.get("approvals", []), source, f"{where} approvals"),
    )


def _approvals(value: Any, source: str, where: str) -> tuple[RunBinding, ...]:
    if not isinstance(value, list):
        raise _fail(source, where, "must be a list of run ids or {run_id, prover, precommitment} tables")
    try:
        return tuple(RunBinding.from_json(v, f"{source}: {where}[{i}]", source="policy approval") for i, v in enumerate(value))
    except FormatError as exc:
        raise FormatError(str(exc)) from None


def _unbound_note(facts: RunFacts, held: Sequence[RunBinding]) -> str:
    """Why an approval naming this run id did not approve it."""
    named = [b for b in held if b.run_id == facts.run_id]
    if not named:
        return ""
    if any(not b.bound for b in named):
        return f"; the approval of {facts.run_id!r} names the run id only and binds no Prover key and precommitment digest, so it approves nothing (docs/rules.md, Approvals)"
    return f"; the approval of {facts.run_id!r} is bound to another Prover key or precommitment than this run's"


def _compute(flops: int | None, h: float) -> tuple[dict[str, Any], list[Unknown]]:
    if flops is None:
        why = "the run's FLOP count is unknown"
        return {"H": float(h)}, [Unknown(f"compute.{k}", why) for k in ("flops", "ratio", "over_threshold", "detectable")]
    return {"flops": float(flops), "H": float(h), "ratio": flops / h, "over_threshold": flops >= h, "detectable": flops >= 2 * h}, []


def _environment(facts: RunFacts, h: float, declared: Mapping[str, int]) -> tuple[dict[str, Any], tuple[Unknown, ...]]:
    """The CEL context, built by the Verifier from its own measurements; every number a double."""
    compute, unknown = _compute(facts.total_flops, h)
    benchmarks: dict[str, float] = {}
    for name in declared:
        value = facts.benchmarks.get(name)
        if value is None:
            unknown.append(Unknown(f"benchmarks.{name}", "not computed by the trusted cluster"))
        else:
            benchmarks[name] = float(value)
    if facts.program is None:
        program: dict[str, Any] = {}
        unknown += [Unknown(f"program.{k}", "the program was not established by the trusted cluster") for k in sorted(_PROGRAM_KEYS)]
    else:
        p = facts.program
        program = {"kind": str(p.get("kind") or ""), "template": str(p.get("template") or ""),
                   "uses": [str(u) for u in p.get("uses") or []], "imports": [str(m) for m in p.get("imports") or []]}
    env = {
        "run_id": facts.run_id,
        "compute": compute,
        "hp": context_value(dict(facts.hyperparameters)),
        "steps": float(facts.steps),
        "lr": [float(x) for x in facts.lr],
        "world_size": float(facts.world_size),
        "chips": float(facts.chips),
        "benchmarks": benchmarks,
        "approved": False,
        "program": program,
    }
    return env, tuple(unknown)


def _probe_context(h: float, benchmarks: Mapping[str, int]) -> tuple[dict[str, Any], dict[str, Callable[..., Any]]]:
    """A typed stand-in run: a v3 expression is evaluated on it once at load to catch type errors."""
    stand_in = RunFacts(run_id="probe", total_flops=int(h), steps=1, lr=[1.0], data=[b"probe"],
                        benchmarks=dict.fromkeys(benchmarks, 1.0), program={"kind": "template", "template": "", "uses": [], "imports": []})
    env, _ = _environment(stand_in, h, benchmarks)
    env["approved"] = True
    return env, extension_functions(stand_in.data)


def _evaluate_rule(rule: Rule, run_id: str, facts: _Facts) -> RuleOutcome:
    text = f": {rule.text}" if rule.text else ""

    def result(applies: bool, outcome: str, detail: str) -> RuleOutcome:
        return RuleOutcome(id=rule.id, run_id=run_id, kind=rule.kind, applies=applies, outcome=outcome, detail=detail)

    try:
        applies = True if rule.when is None else rule.when.evaluate(facts.context, facts.unknown)
    except EvalError as exc:
        return result(False, "error", f"cannot evaluate `when` ({rule.when.shown if rule.when else ''}): {exc}")
    if not applies:
        return result(False, "not-applicable", f"`when` is false ({rule.when.shown if rule.when else ''})")
    if rule.kind == "reporting":
        return result(True, "report", f"reporting duty{text}")
    if rule.kind == "ban":
        return result(True, "violation", f"banned{text}")
    if rule.kind == "approval" and not facts.approved:
        return result(True, "violation", f"needs approval and run {run_id!r} is not approved{text}")
    if rule.require is None:  # an unconditional approval
        return result(True, "ok", f"approved{text}")
    try:
        satisfied = rule.require.evaluate(facts.context, facts.unknown)
    except EvalError as exc:
        return result(True, "error", f"cannot evaluate `require` ({rule.require.shown}): {exc}")
    failed = {
        "approval": f"approved on a condition that does not hold ({rule.require.shown} is false)",
        "mitigation": f"mandated mitigation missing ({rule.require.shown} is false)",
        "requirement": f"requirement not met ({rule.require.shown} is false)",
    }
    passed = {"approval": "approved", "mitigation": "mandated mitigation present", "requirement": "requirement met"}
    if not satisfied:
        return result(True, "violation", failed[rule.kind] + text)
    return result(True, "ok", passed[rule.kind] + text)


def _margin_note(flops: int | None, h: float) -> str:
    """§3.2: a run between H and 2H is judged, but sampling only guarantees detection from 2H."""
    if flops is None or not h <= flops < 2 * h:
        return ""
    return (
        f"margin: the run used {flops:.3g} FLOPs = {flops / h:.2f} H, between H and 2H; "
        "inspection sampling guarantees detection only for runs of at least 2H (paper §3.2)"
    )


def rules_check(outcomes: Sequence[RuleOutcome | Mapping[str, Any]]) -> tuple[bool | None, str]:
    """The verdict's "rules" check from all runs' outcomes: (passed, detail).

    Any "violation" fails it (False); otherwise any "error" leaves it undecided (None,
    inconclusive); otherwise it passes, listing reporting duties.
    """
    rows = [o.to_json() if isinstance(o, RuleOutcome) else dict(o) for o in outcomes]

    def named(kind: str) -> list[str]:
        return [f"{r.get('id')} ({r.get('run_id')})" for r in rows if r.get("outcome") == kind]

    violations, errors, reports = named("violation"), named("error"), named("report")
    if violations:
        return False, f"{len(violations)} violation(s): {', '.join(violations)}"
    if errors:
        return None, f"{len(errors)} rule(s) could not be evaluated: {', '.join(errors)}"
    duties = f"; reporting duties: {', '.join(reports)}" if reports else ""
    return True, f"{len(rows)} rule outcome(s), no violation{duties}"
