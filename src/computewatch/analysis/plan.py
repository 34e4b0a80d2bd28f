"""A sampling plan for one setting, with the reporting policy for impossible settings.

Policy (docs/analysis.md, "Impossible settings"):
* a stockpile smaller than the chips needed to train H within a year: no number under either
  formula (the paper's "—");
* b >= 1 (the stockpile cannot train H within T, but can within a year): the exact form has no
  answer (null); the linear form still gives its number, as the paper's Table 1 does for
  Chinchilla-280B at C = 10^3, and the plan is marked infeasible with the reason.
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

__all__ = ["SamplingPlan", "plan", "table_samples_per_year"]


@dataclass(frozen=True)
class SamplingPlan:
    """How many chips to sample, and what that buys; numbers are None where there is no answer."""

    samples_per_period: float | None
    samples_per_year: float | None
    detection_probability: float | None
    feasible: bool
    reason: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "samples_per_period": self.samples_per_period,
            "samples_per_year": self.samples_per_year,
            "detection_probability": self.detection_probability,
            "feasible": self.feasible,
            "reason": self.reason,
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
    probability = None
    if s is not None and reason is None:
        probability = detection_probability(setting, math.ceil(s))
    return SamplingPlan(
        samples_per_period=s,
        samples_per_year=None if s is None else annualise(s, setting),
        detection_probability=probability,
        feasible=reason is None,
        reason=reason,
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
