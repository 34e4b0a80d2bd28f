"""Footnote 5: samples per year and inspectors for a worldwide regime."""

from __future__ import annotations

import math

from computewatch.analysis.errors import InvalidParameterError
from computewatch.analysis.params import Setting
from computewatch.analysis.plan import table_samples_per_year

__all__ = ["CHIPS_PER_INSPECTOR", "FOOTNOTE5", "footnote5", "inspectors_needed"]

# Footnote 5's scenario: a Chinchilla-280B-scale run (the paper's 232k is reproduced with
# H = 9.9e24; 1e25 gives about 229k), a global stockpile of 10^7 chips, each 3x an H100.
FOOTNOTE5 = Setting(H=9.9e24, C=1e7, a=3e15 * 86_400, f=0.1, T=30.0, T_m=30.0, p=0.9)
CHIPS_PER_INSPECTOR = 1000


def inspectors_needed(samples_per_year: float, chips_per_inspector: float = CHIPS_PER_INSPECTOR) -> int:
    """Inspectors to cover the yearly samples, each inspecting `chips_per_inspector` chips a year."""
    if not math.isfinite(samples_per_year) or samples_per_year < 0:
        raise InvalidParameterError(f"samples per year must be a non-negative number, got {samples_per_year!r}")
    if not math.isfinite(chips_per_inspector) or chips_per_inspector <= 0:
        raise InvalidParameterError(f"chips per inspector must be positive, got {chips_per_inspector!r}")
    return math.ceil(samples_per_year / chips_per_inspector)


def footnote5(setting: Setting = FOOTNOTE5, formula: str = "linear") -> dict[str, float]:
    """Samples per year and inspectors for the worldwide regime of footnote 5."""
    samples = table_samples_per_year(setting, formula)
    if samples is None:
        raise InvalidParameterError(f"the footnote 5 setting is infeasible: {setting.infeasibility()}")
    return {"samples_per_year": samples, "inspectors": inspectors_needed(samples)}
