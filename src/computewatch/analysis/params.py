"""The paper's symbols (§3.2) as one validated, immutable setting.

Symbols keep the paper's names: H (FLOPs of the run to catch), C (chips in the audited
stockpile), a (FLOPs per chip per day), f (snapshots per chip per day, Poisson), T (run length in
days), T_m (monitoring period in days), p (desired detection probability).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from computewatch.analysis.errors import InvalidParameterError

__all__ = [
    "DAYS_PER_YEAR",
    "H100_FLOPS_PER_DAY",
    "Setting",
    "ceil_tolerant",
]

# NVIDIA H100 SXM 16-bit Tensor Core throughput, 10^15 FLOP/s, over a day (Table 1's a).
H100_FLOPS_PER_DAY = 1e15 * 24 * 3600
DAYS_PER_YEAR = 365

# Relative slack for ceil(): H/(a*T) or T/T_m that are integers in exact arithmetic can land a
# few ulps above the integer in floating point, and must not gain a spurious extra unit.
_CEIL_SLACK = 1e-9


def ceil_tolerant(x: float) -> int:
    """ceil(x), treating values within a relative 1e-9 above an integer as that integer."""
    nearest = round(x)
    if abs(x - nearest) <= _CEIL_SLACK * max(1.0, abs(x)):
        return int(nearest)
    return math.ceil(x)


def _count(n: int) -> str:
    """A chip count for a message: digits with separators, e-notation once it gets long."""
    return f"{n:,}" if n < 10**15 else f"{float(n):.3g}"


def _require_positive(name: str, value: float) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class Setting:
    """One monitoring setting in the paper's symbols; defaults are Table 1's (§3.2)."""

    H: float
    C: float
    a: float = H100_FLOPS_PER_DAY
    f: float = 0.1
    T: float = 30.0
    T_m: float = 30.0
    p: float = 0.9

    def __post_init__(self) -> None:
        for name in ("H", "C", "a", "f", "T", "T_m"):
            _require_positive(name, getattr(self, name))
        if not isinstance(self.p, numbers.Real) or isinstance(self.p, (bool, np.bool_)) or not (0.0 < self.p < 1.0):
            raise InvalidParameterError(
                f"p must lie strictly between 0 and 1, got {self.p!r}: p = 0 needs no samples and "
                "p = 1 cannot be reached by random sampling"
            )
        self._check_derived()

    def _check_derived(self) -> None:
        """Each symbol can be finite and positive while the quantities built from them
        overflow or underflow (H = 1e-300 on C = 1e300 chips gives b = 0); refuse those
        settings here, naming the symbols, rather than return inf, nan or a traceback."""
        derived = (
            ("b = H/(a*T*C)", lambda: self.H / (self.a * self.T * self.C), "H, a, T, C"),
            ("H/(365*a)", lambda: self.H / (DAYS_PER_YEAR * self.a), "H, a"),
            ("T/T_m", lambda: self.T / self.T_m, "T, T_m"),
            ("p_w = 1 - exp(-f*T_m)", lambda: self.snapshot_probability, "f, T_m"),
            ("Eq. 1's s = -ln(1-p)/(b*p_w)*T_m/T",
             lambda: -math.log1p(-self.p) / (self.b * self.snapshot_probability) * (self.T_m / self.T),
             "H, C, a, f, T, T_m, p"),
            ("Eq. 1's samples per year, 365*s/T_m",
             lambda: -math.log1p(-self.p) / (self.b * self.snapshot_probability) / self.T * DAYS_PER_YEAR,
             "H, C, a, f, T, T_m, p"),
        )
        for label, compute, symbols in derived:
            try:
                value = compute()
            except (ZeroDivisionError, OverflowError):
                value = math.inf
            if not math.isfinite(value) or value <= 0:
                raise InvalidParameterError(
                    f"{label} is {value!r}, outside floating-point range: {symbols} are too extreme "
                    "for a meaningful answer"
                )

    def replace(self, **changes: float) -> Setting:
        """A copy with some symbols changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def b(self) -> float:
        """Fraction of the stockpile the run needs: b = H/(a*T*C)."""
        return self.H / (self.a * self.T * self.C)

    @property
    def chip_days(self) -> float:
        """Chip-days to train H FLOPs (Table 1's "H100-days" when a is the H100's)."""
        return self.H / self.a

    @property
    def chips_needed(self) -> float:
        """Minimum chips to train H FLOPs within T days: H/(a*T)."""
        return self.H / (self.a * self.T)

    @property
    def chips_for_one_year(self) -> int:
        """Chips needed to train H FLOPs within a year: ceil(H/(365*a))."""
        return ceil_tolerant(self.H / (DAYS_PER_YEAR * self.a))

    @property
    def rounds(self) -> int:
        """Sampling rounds while the run lasts: ceil(T/T_m) (Appendix B, step 4)."""
        return ceil_tolerant(self.T / self.T_m)

    @property
    def snapshot_probability(self) -> float:
        """p_w = 1 - exp(-f*T_m): a run chip logged a snapshot within one monitoring period."""
        return -math.expm1(-self.f * self.T_m)

    def infeasibility(self) -> str | None:
        """Why the Prover cannot do this run with this stockpile, or None when it can."""
        if self.C < self.chips_for_one_year:
            return (
                f"the stockpile of C = {self.C:g} chips is smaller than the "
                f"{_count(self.chips_for_one_year)} chips needed to train H = {self.H:g} FLOPs within a "
                "year (the paper prints '—')"
            )
        if self.b >= 1.0:
            return (
                f"b = H/(a*T*C) = {self.b:.3g} >= 1: the C = {self.C:g} chips cannot train "
                f"H = {self.H:g} FLOPs within T = {self.T:g} days"
            )
        return None
