"""The attack suite: every attack of the paper's attack table, §5.1, Appendix C and ANCHORS.md
as a cheating Prover (or chip owner) run end to end against the real checks.

Each attack is registered here with its name, the paper section it comes from, its family and
the check expected to catch it. `run_attack(name, trials, seed)` returns an `AttackResult`:
whether it was detected, by which check (a stable name, see below), over how many trials, the
measured detection rate and, for sampling-driven attacks, the closed-form prediction with the
interval the measurement must agree with.

Three kinds of attack:
* ``caught``: a deterministic cheat the regime must catch in every trial (log tampering, a
  forged transcript ...). `ok` means every trial was caught by the expected check.
* ``rate``: a cheat whose detection is random (inspection sampling, random snapshot times).
  `predicted_rate` is the analysis module's closed form; `ok` means it lies inside the
  measurement's 99.9% Wilson interval (so a correct prediction fails one seed in a thousand).
* ``gap``: a cheat the paper or the model says the regime cannot (always) catch; the result
  carries the measured rate and the documented reason; `ok` means the measurement matches the
  documented limit.

Check names (`detected_by`) are ``<where>.<check>``:
``verifier.<name>`` a failed check of `computewatch.verifier.verify` (chip-logs, precommitment,
snapshots, init, data, hyperparameters, segments, loss, compute ...);
``inspection.<name>`` a problem of a registry inspection (boot, attestation, identity, tamper,
log, witness) and ``inspection.refused``; ``chip.verified-boot`` the chip refusing an image;
``registry.<flag kind>`` a flag raised when a chip turns up (custody-mismatch, reported-lost,
no-custody-trail); ``registry.investigation`` an investigation opened by loss reports;
``location.<check>`` a problem
of a location check (`Registry.locate`: radius, disc, replay, chip-signature, landmark, ...);
``chip.root-of-trust`` the root of trust refusing to lower its counter;
``sampling.inspection`` / ``sampling.snapshot`` a random draw that hit the cheat;
``sandbox.<what>`` (filesystem, network) a hostile program's attempt the Verifier's sandbox
contained (nothing it tried happened, and the verdict is the one its run deserves).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from computewatch.analysis.montecarlo import wilson_interval

__all__ = [
    "ATTACKS",
    "MAX_TRIALS",
    "Attack",
    "AttackResult",
    "Context",
    "Kind",
    "Trial",
    "agreement_interval",
    "attack_names",
    "get_attack",
    "register",
    "result_from_trials",
    "run_all",
    "run_attack",
]

Kind = Literal["caught", "rate", "gap"]
MAX_TRIALS = 1_000_000
_Z999 = 3.2905267314919255  # two-sided 99.9% normal quantile


@dataclass(frozen=True)
class Trial:
    """One attempt of an attack: whether the regime caught it, with which check first, and every
    check that fired."""

    caught: bool
    by: str | None = None
    checks: tuple[str, ...] = ()
    detail: str = ""


@dataclass
class AttackResult:
    attack: str
    paper_ref: str
    family: str
    kind: Kind
    expected: str | None
    detected: bool
    detected_by: str | None
    trials: int
    detection_rate: float
    predicted_rate: float | None
    ok: bool
    ci95: tuple[float, float] | None = None
    ci999: tuple[float, float] | None = None
    checks: list[str] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "paper_ref": self.paper_ref,
            "detected": self.detected,
            "detected_by": self.detected_by,
            "trials": self.trials,
            "detection_rate": self.detection_rate,
            "predicted_rate": self.predicted_rate,
            "family": self.family,
            "kind": self.kind,
            "expected": self.expected,
            "ok": self.ok,
            "ci95": list(self.ci95) if self.ci95 else None,
            "ci999": list(self.ci999) if self.ci999 else None,
            "checks": list(self.checks),
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "extra": self.extra,
        }


class Context:
    """A scratch folder and caches shared by the attacks of one suite run (an honest training
    run, provisioned chips, a register), so that `--all` trains the honest baseline once."""

    def __init__(self, workdir: str | Path | None = None) -> None:
        self._owned = workdir is None
        self.root = Path(tempfile.mkdtemp(prefix="computewatch-attacks-")) if workdir is None else Path(workdir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache: dict[str, Any] = {}
        self._counter = 0

    def scratch(self, name: str) -> Path:
        """A fresh, empty folder under the context's root."""
        self._counter += 1
        path = self.root / f"{self._counter:04d}-{name}"
        path.mkdir(parents=True)
        return path

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def close(self) -> None:
        for value in self.cache.values():
            closer = getattr(value, "close", None)
            if callable(closer):
                closer()
        self.cache.clear()
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Runner = Callable[[Context, int, int], AttackResult]


@dataclass(frozen=True)
class Attack:
    name: str
    paper_ref: str
    family: str
    kind: Kind
    expected: str | None  # the check that must catch it (caught), or the mechanism (rate, gap)
    summary: str  # what the cheater does
    default_trials: int
    max_trials: int
    run: Runner
    why: str = ""  # for gaps: why the regime cannot (always) catch it

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "paper_ref": self.paper_ref,
            "family": self.family,
            "kind": self.kind,
            "expected": self.expected,
            "summary": self.summary,
            "default_trials": self.default_trials,
            "max_trials": self.max_trials,
            "why": self.why,
        }


ATTACKS: dict[str, Attack] = {}
_FAMILY_MODULES = ("chiplog", "hiding", "timing", "appendix_c", "spoofs", "claims", "hostile", "lots", "location", "service_attacks", "step_forgery")


def register(
    name: str,
    *,
    paper_ref: str,
    family: str,
    kind: Kind,
    expected: str | None,
    summary: str,
    default_trials: int = 1,
    max_trials: int = 20,
    why: str = "",
) -> Callable[[Runner], Runner]:
    """Decorator: add an attack's runner to the suite."""

    def add(fn: Runner) -> Runner:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} registered twice")
        ATTACKS[name] = Attack(name, paper_ref, family, kind, expected, summary, default_trials, max_trials, fn, why)
        return fn

    return add


def _load() -> None:
    import importlib

    for module in _FAMILY_MODULES:
        importlib.import_module(f"computewatch.adversary.{module}")


def attack_names() -> list[str]:
    """Every attack, in suite order (family by family)."""
    _load()
    return list(ATTACKS)


def get_attack(name: str) -> Attack:
    _load()
    try:
        return ATTACKS[name]
    except KeyError:
        raise KeyError(f"unknown attack {name!r}; `computewatch attack list` names them") from None


def agreement_interval(detected: int, trials: int) -> tuple[float, float]:
    """The interval a closed form must fall in to agree with a measurement (Wilson, 99.9%)."""
    return wilson_interval(detected, trials, z=_Z999)


def primary_check(failed: Sequence[str], expected: str | None) -> str | None:
    """The check reported as the one that caught an attack: the expected one when it fired
    (so a test that asserts it fails the moment that check stops firing), else the first."""
    if expected is not None and expected in failed:
        return expected
    return failed[0] if failed else None


def result_from_trials(
    attack: Attack,
    trials: Sequence[Trial],
    *,
    predicted: float | None = None,
    ok: bool | None = None,
    detail: str = "",
    extra: dict[str, Any] | None = None,
) -> AttackResult:
    """Summarise trials: rate, intervals, the most frequent first check, and `ok` by kind
    (unless given)."""
    n = len(trials)
    caught = sum(t.caught for t in trials)
    rate = caught / n if n else 0.0
    by_count: dict[str, int] = {}
    checks: list[str] = []
    for t in trials:
        if t.caught and t.by:
            by_count[t.by] = by_count.get(t.by, 0) + 1
        for c in t.checks:
            if c not in checks:
                checks.append(c)
    detected_by = max(by_count, key=lambda k: (by_count[k], k == attack.expected)) if by_count else None
    ci95 = wilson_interval(caught, n) if n else None
    ci999 = agreement_interval(caught, n) if n else None
    if ok is None:
        if attack.kind == "caught":
            ok = n > 0 and caught == n and all(t.by == attack.expected for t in trials)
        elif attack.kind == "rate":
            ok = predicted is not None and ci999 is not None and ci999[0] <= predicted <= ci999[1]
        else:
            ok = True
    details = [t.detail for t in trials if t.detail]
    return AttackResult(
        attack=attack.name,
        paper_ref=attack.paper_ref,
        family=attack.family,
        kind=attack.kind,
        expected=attack.expected,
        detected=caught == n and n > 0 if attack.kind == "caught" else caught > 0,
        detected_by=detected_by,
        trials=n,
        detection_rate=rate,
        predicted_rate=predicted,
        ok=bool(ok),
        ci95=ci95,
        ci999=ci999,
        checks=checks,
        detail=detail or (details[0] if details else ""),
        extra=extra or {},
    )


def run_attack(name: str, trials: int | None = None, seed: int = 0, *, context: Context | None = None) -> AttackResult:
    """Run one attack end to end; `trials` defaults to the attack's own default."""
    attack = get_attack(name)
    n = attack.default_trials if trials is None else trials
    if isinstance(n, bool) or not isinstance(n, int) or not (1 <= n <= attack.max_trials):
        raise ValueError(f"attack {name}: trials must be a whole number in 1..{attack.max_trials}, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the seed must be a whole number >= 0, got {seed!r}")
    own = context is None
    ctx = Context() if context is None else context
    try:
        start = time.perf_counter()
        result = attack.run(ctx, n, seed)
        result.seconds = time.perf_counter() - start
        return result
    finally:
        if own:
            ctx.close()


def run_all(
    trials: int | None = None,
    seed: int = 0,
    *,
    names: Sequence[str] | None = None,
    context: Context | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Iterator[AttackResult]:
    """Run attacks in suite order, sharing one context; `trials` (when given) is capped at each
    attack's own maximum."""
    chosen = list(names) if names is not None else attack_names()
    own = context is None
    ctx = Context() if context is None else context
    try:
        for i, name in enumerate(chosen):
            if progress is not None:
                progress(name, i, len(chosen))
            attack = get_attack(name)
            n = None if trials is None else max(1, min(trials, attack.max_trials))
            yield run_attack(name, n, seed, context=ctx)
        if progress is not None:
            progress("", len(chosen), len(chosen))
    finally:
        if own:
            ctx.close()
