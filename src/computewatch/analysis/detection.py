"""Detection probability of a sampling plan against the Prover strategies of Appendix C.

Two closed forms:

* `detection_probability`: Appendix B's model. The run starts at a period boundary and every
  one of its ceil(D/T_m) sampling rounds sees a run chip holding a snapshot with probability
  p_w = 1 - exp(-f*min(D, T_m)), D being the run's length.
* `detection_probability_windowed`: the same independent-samples model, but with the run
  starting at an offset inside a monitoring period; inspection j (at j*T_m) sees the snapshots
  logged in the run's first w_j = min(j*T_m, t0 + D) - t0 days, and the inspection at the
  first boundary after the run's end counts (logs persist; it is within T_m of the end).
  Averaged over a uniform offset when none is given. Where T is a multiple of T_m this is at
  least the Appendix B value (conservative paper); where it is not, a run starting late in a
  period gets one fewer full window and Appendix B can be optimistic (footnote 24 (ii)).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from computewatch.analysis.errors import InfeasibleSettingError, InvalidParameterError
from computewatch.analysis.params import Setting, ceil_tolerant

__all__ = [
    "STRATEGIES",
    "RunShape",
    "Strategy",
    "detection_probability",
    "detection_probability_windowed",
    "inspection_windows",
    "run_shape",
    "shape_detection_probability",
]

Strategy = Literal["minimum", "fewer-longer", "more-shorter"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

# Gauss-Legendre nodes per smooth piece of the offset integral: the integrand is smooth between
# the offsets where the number of inspections changes, so a few dozen nodes give ~1e-12.
_QUADRATURE_NODES = 48


@dataclass(frozen=True)
class RunShape:
    """How the Prover lays out the run: fraction b of the stockpile, busy for `days`."""

    b: float
    days: float

    def chips(self, C: float) -> float:
        return self.b * C


def run_shape(setting: Setting, strategy: str = "minimum", k: float = 1.0) -> RunShape:
    """The run's chips and length for a Prover strategy (Appendix C).

    minimum: b = H/(a*T*C) for T days; fewer-longer (C.1): b/k for k*T days; more-shorter (C.2):
    k*b for T/k days. Raises when the strategy needs more than the whole stockpile.
    """
    if strategy not in STRATEGIES:
        raise InvalidParameterError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not math.isfinite(k) or k < 1.0:
        raise InvalidParameterError(f"the strategy factor k must be a finite number >= 1, got {k!r}")
    if strategy == "minimum":
        shape = RunShape(setting.b, setting.T)
    elif strategy == "fewer-longer":
        shape = RunShape(setting.b / k, setting.T * k)
    else:
        shape = RunShape(setting.b * k, setting.T / k)
    if shape.b > 1.0:
        raise InfeasibleSettingError(
            f"the {strategy} strategy (k = {k:g}) needs {shape.b:.3g} times the stockpile of "
            f"C = {setting.C:g} chips"
        )
    return shape


def _require_samples(s: float) -> None:
    if not math.isfinite(s) or s < 0:
        raise InvalidParameterError(f"samples per period must be a non-negative number, got {s!r}")


def detection_probability(setting: Setting, s: float, strategy: str = "minimum", k: float = 1.0) -> float:
    """Appendix B's closed form: 1 - (1 - b*p_w)^(s*ceil(D/T_m)), p_w = 1 - exp(-f*min(D, T_m)).

    For the minimum strategy with T >= T_m this is exactly the expression Eq. 1 inverts; for
    more-shorter with D <= T_m it is C.2's p_d(t); for fewer-longer it is C.1's p_d(k) with a
    finite f.
    """
    _require_samples(s)
    return shape_detection_probability(run_shape(setting, strategy, k), s, setting.f, setting.T_m)


def shape_detection_probability(shape: RunShape, s: float, f: float, T_m: float) -> float:
    """Appendix B's closed form for any run shape: 1 - (1 - b*p_w)^(s*ceil(D/T_m)),
    p_w = 1 - exp(-f*min(D, T_m)); 0 for a run of no length or no samples."""
    if shape.days <= 0.0 or s == 0:
        return 0.0
    per_sample_hit = shape.b * -math.expm1(-f * min(shape.days, T_m))
    if per_sample_hit >= 1.0:
        return 1.0
    return -math.expm1(s * ceil_tolerant(shape.days / T_m) * math.log1p(-per_sample_hit))


def inspection_windows(days: float, T_m: float, offset: float) -> np.ndarray:
    """Days of the run each counted inspection sees, for a run of `days` starting `offset` days
    into a monitoring period (inspections at T_m, 2*T_m, ...; the last one counted is the first
    at or after the run's end)."""
    if not (0.0 <= offset < T_m):
        raise InvalidParameterError(f"the start offset must lie in [0, T_m) = [0, {T_m:g}), got {offset!r}")
    count = ceil_tolerant((offset + days) / T_m)
    boundaries = T_m * np.arange(1, count + 1, dtype=float)
    return np.minimum(boundaries, offset + days) - offset


def _miss_at_offset(shape: RunShape, s: float, f: float, T_m: float, offset: float) -> float:
    windows = inspection_windows(shape.days, T_m, offset)
    per_sample_hit = shape.b * -np.expm1(-f * windows)
    return float(np.exp(s * np.sum(np.log1p(-np.minimum(per_sample_hit, 1.0 - 1e-300)))))


def detection_probability_windowed(
    setting: Setting,
    s: float,
    strategy: str = "minimum",
    k: float = 1.0,
    offset: float | None = None,
) -> float:
    """Detection probability with explicit inspection windows (independent samples).

    `offset`: days into a monitoring period at which the run starts; None averages over a
    uniform offset in [0, T_m), the world the Monte Carlo simulates.
    """
    _require_samples(s)
    shape = run_shape(setting, strategy, k)
    if offset is not None:
        return 1.0 - _miss_at_offset(shape, s, setting.f, setting.T_m, offset)
    # The inspection count jumps where offset + D crosses a boundary; integrate each smooth piece.
    T_m = setting.T_m
    jump = (ceil_tolerant(shape.days / T_m) * T_m - shape.days) % T_m
    edges = [0.0, T_m] if jump <= 0.0 else [0.0, jump, T_m]
    nodes, weights = np.polynomial.legendre.leggauss(_QUADRATURE_NODES)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        half = 0.5 * (hi - lo)
        for x, w in zip(nodes, weights, strict=True):
            total += w * half * _miss_at_offset(shape, s, setting.f, T_m, lo + half * (x + 1.0))
    return 1.0 - total / T_m
