"""A sampling plan for one setting, with the reporting policy for impossible settings.

Policy (docs/analysis.md, "Impossible settings"):
* a stockpile smaller than the chips needed to train H within a year: no number under either
  formula (the paper's "—");
* b >= 1 (the stockpile cannot train H within T, but can within a year): the exact form has no
  answer (null); the linear form still gives its number, as the paper's Table 1 does for
  Chinchilla-280B at C = 10^3, and the plan is marked infeasible with the reason.
* a plan that samples more chips per period than the stockpile holds cannot be carried out:
  its number is kept (it says how far off the setting is) and it is marked infeasible.
* a plan that can be carried out but detects with probability below p (a run shorter than a
  monitoring period, T < T_m: Eq. 1 counts snapshots over all of T_m, the run chips log only
  while the run lasts) carries a warning naming the samples per period that do reach p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from computewatch.analysis.detection import detection_probability
from computewatch.analysis.params import Setting
from computewatch.analysis.sampling import (
    annualise,
    check_formula,
    samples_exact,
    samples_exact_continuous,
    samples_linear,
)

__all__ = ["SamplingPlan", "plan", "samples_to_reach", "table_samples_per_year"]


@dataclass(frozen=True)
class SamplingPlan:
    """How many chips to sample, and what that buys; numbers are None where there is no answer."""

    samples_per_period: float | None
    samples_per_year: float | None
    detection_probability: float | None
    feasible: bool
    reason: str | None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "samples_per_period": self.samples_per_period,
            "samples_per_year": self.samples_per_year,
            "detection_probability": self.detection_probability,
            "feasible": self.feasible,
            "reason": self.reason,
            "warnings": list(self.warnings),
        }


def _beyond_one_year(setting: Setting) -> bool:
    return setting.C < setting.chips_for_one_year


def plan(setting: Setting, formula: str = "linear") -> SamplingPlan:
    """Eq. 1 for `setting`; `detection_probability` is Appendix B's value for the integer plan
    ceil(s) per period (what a Verifier would actually sample)."""
    formula = check_formula(formula)
    reason = setting.infeasibility()
    s: float | None
    if _beyond_one_year(setting) or (formula == "exact" and reason is not None):
        s = None
    elif formula == "linear":
        s = samples_linear(setting)
    else:
        s = samples_exact(setting)  # the integer plan
    if s is not None and reason is None and math.ceil(s) > setting.C:
        reason = (
            f"the plan samples {math.ceil(s):,} chips per period, more than the stockpile of C = {setting.C:g} "
            f"chips: no plan reaches p = {setting.p:g} (sampling every chip each period detects with "
            f"probability {detection_probability(setting, math.floor(setting.C)):.4g})"
        )
        if formula == "exact":
            s = None  # the exact form answers null whenever no plan can be carried out
    probability = None
    warnings: list[str] = []
    if s is not None and reason is None:
        probability = detection_probability(setting, math.ceil(s))
        if probability < setting.p * (1 - 1e-12):
            warnings.append(_below_p_warning(setting, math.ceil(s), probability))
    return SamplingPlan(
        samples_per_period=s,
        samples_per_year=None if s is None else annualise(s, setting),
        detection_probability=probability,
        feasible=reason is None,
        reason=reason,
        warnings=tuple(warnings),
    )


def samples_to_reach(setting: Setting) -> int | None:
    """The smallest whole s per period whose Appendix B detection probability (snapshots only
    while the run lasts: p_w = 1 - exp(-f*min(T, T_m))) reaches p; None if none does (b >= 1,
    or a per-sample chance too small for floating point)."""
    if setting.infeasibility() is not None:
        return None
    hit = setting.b * -math.expm1(-setting.f * min(setting.T, setting.T_m))
    if not 0.0 < hit < 1.0 or math.log1p(-hit) == 0.0:
        return None
    s = max(1, math.ceil(math.log1p(-setting.p) / (setting.rounds * math.log1p(-hit))))
    while s > 1 and detection_probability(setting, s - 1) >= setting.p:
        s -= 1
    while detection_probability(setting, s) < setting.p * (1 - 1e-12):
        s += 1
    return s


def _below_p_warning(setting: Setting, s: int, probability: float) -> str:
    why = (
        f"the run (T = {setting.T:g} days) is shorter than a monitoring period (T_m = {setting.T_m:g} days) "
        "and Eq. 1 counts snapshots over all of T_m"
        if setting.T < setting.T_m
        else "Eq. 1's approximation falls short here"
    )
    needed = samples_to_reach(setting)
    if needed is None:
        fix = "no whole number of chips a period reaches p"
    else:
        where = "" if needed <= setting.C else f", more than the stockpile of C = {setting.C:g}"
        fix = f"{needed:,} chips a period reach p{where}"
    return (
        f"sampling {s:,} chips a period detects the run with probability {probability:.4f}, below p = "
        f"{setting.p:g}: {why}; {fix}"
    )


def table_samples_per_year(setting: Setting, formula: str = "linear") -> float | None:
    """A Table 1 cell, unrounded: linear as the paper prints it, exact as the real root s*.

    The exact cell is the real root (not the integer plan) so that it compares like for like
    with the paper's unrounded linear numbers; None follows the same policy as `plan`.
    """
    formula = check_formula(formula)
    if _beyond_one_year(setting):
        return None
    if formula == "linear":
        return annualise(samples_linear(setting), setting)
    if setting.infeasibility() is not None:
        return None
    return annualise(samples_exact_continuous(setting), setting)
