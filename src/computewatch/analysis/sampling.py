"""Eq. 1 (§3.2, Appendix B): how many chips the Verifier samples per monitoring period.

Two forms, both with b = H/(a*T*C) and p_w = 1 - exp(-f*T_m):

* exact: the smallest integer s with 1 - (1 - b*p_w)^(s*ceil(T/T_m)) >= p (Appendix B with its
  notation glitches mended: see docs/analysis.md);
* linear: s = -ln(1-p) / (b*p_w) * T_m/T, the first-order form (ln(1-x) ~ -x) that reproduces
  the paper's Table 1 to the digit.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from computewatch.analysis.errors import InfeasibleSettingError, InvalidParameterError
from computewatch.analysis.params import DAYS_PER_YEAR, Setting, ceil_tolerant

__all__ = [
    "FORMULAS",
    "Formula",
    "annualise",
    "check_formula",
    "samples_exact",
    "samples_exact_continuous",
    "samples_linear",
]

Formula = Literal["linear", "exact"]
FORMULAS: tuple[str, ...] = get_args(Formula)


def annualise(samples_per_period: float, setting: Setting) -> float:
    """Samples per year, 365*s/T_m (Table 1's unit)."""
    return DAYS_PER_YEAR * samples_per_period / setting.T_m


def samples_linear(setting: Setting) -> float:
    """Eq. 1's first-order form, s = -ln(1-p)/(b*p_w) * T_m/T (unrounded).

    No feasibility check on purpose: this is the paper's Table 1 formula, which the paper also
    applies where b >= 1 (Chinchilla-280B at C = 10^3 prints 7). Callers that must refuse
    impossible settings check `setting.infeasibility()` (as `plan` does).
    """
    return -math.log1p(-setting.p) / (setting.b * setting.snapshot_probability) * (setting.T_m / setting.T)


def _require_feasible(setting: Setting) -> None:
    reason = setting.infeasibility()
    if reason is not None:
        raise InfeasibleSettingError(reason)


def samples_exact_continuous(setting: Setting) -> float:
    """The real root s* of 1 - (1 - b*p_w)^(s*ceil(T/T_m)) = p; the integer plan is ceil(s*).

    Raises InfeasibleSettingError when the Prover cannot do the run (b >= 1, or a stockpile
    smaller than the chips needed within a year).
    """
    _require_feasible(setting)
    per_sample_hit = setting.b * setting.snapshot_probability
    return math.log1p(-setting.p) / (setting.rounds * math.log1p(-per_sample_hit))


def _miss_probability(setting: Setting, s: int) -> float:
    per_sample_hit = setting.b * setting.snapshot_probability
    return math.exp(s * setting.rounds * math.log1p(-per_sample_hit))


def samples_exact(setting: Setting) -> int:
    """Eq. 1 exact: the smallest integer s per period with 1 - (1 - b*p_w)^(s*ceil(T/T_m)) >= p."""
    s = max(1, ceil_tolerant(samples_exact_continuous(setting)))
    # ceil_tolerant may round a root a few ulps above an integer down; step until the inequality
    # really holds, and back while the one below also satisfies it (minimality).
    while 1.0 - _miss_probability(setting, s) < setting.p * (1 - 1e-12):
        s += 1
    while s > 1 and 1.0 - _miss_probability(setting, s - 1) >= setting.p * (1 - 1e-12):
        s -= 1
    return s


def check_formula(formula: str) -> Formula:
    """Validate a formula name from user input."""
    if formula not in FORMULAS:
        raise InvalidParameterError(f"formula must be one of {', '.join(FORMULAS)}, got {formula!r}")
    return formula  # type: ignore[return-value]

