"""The covert-capacity bound: Eq. 1 inverted for the run size a register's inspections catch.

Eq. 1 gives the samples s that catch a run of H FLOPs with probability p. A register holds the
inverse question's inputs: C chips in the stockpile, s of them actually inspected in a monitoring
period of T_m days, chips at a FLOPs a day and f snapshots a day. For a run inside one period
(T = T_m, one sampling round; Appendix B), detection is 1 - (1 - b*p_w)^s with
p_w = 1 - exp(-f*T_m) and b = H/(a*T_m*C); it reaches p at

    b* = (1 - (1-p)^(1/s)) / p_w,   H* = min(b*, 1) * a * T_m * C.

Every run larger than H* would have been caught with probability at least p; a run of H* or
less could have escaped with probability more than 1 - p: H* is the largest run the inspections
do not rule out at confidence p (`sampled_hidden_flops`). Chips outside the sampling (lost,
refused, placed outside their facility) could run all period unobserved and add a*T_m each
(`Exposure.max_hidden_flops`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from computewatch.analysis.errors import InvalidParameterError

__all__ = ["Exposure", "exposure", "sampled_hidden_flops"]


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"{name} must be a positive finite number, got {value!r}")


def sampled_hidden_flops(C: int, s: int, *, a: float, f: float, T_m: float, p: float) -> float:
    """H*: the run size whose detection probability with s of C chips inspected reaches p (the
    whole stockpile's period, C*a*T_m, when no run fits below p: s = 0 or b* >= 1)."""
    for name, value in (("a", a), ("f", f), ("T_m", T_m)):
        _positive(name, value)
    if not 0.0 < p < 1.0:
        raise InvalidParameterError(f"p must lie strictly between 0 and 1, got {p!r}")
    if not isinstance(C, int) or not isinstance(s, int) or C < 0 or not 0 <= s <= C:
        raise InvalidParameterError(f"need whole numbers 0 <= s <= C, got s = {s!r}, C = {C!r}")
    if C == 0:
        return 0.0
    full = a * T_m * C
    if s == 0:
        return full
    p_w = -math.expm1(-f * T_m)
    b = -math.expm1(math.log1p(-p) / s) / p_w
    return full * min(b, 1.0)


@dataclass(frozen=True)
class Exposure:
    """One stockpile's exposure in one period."""

    chips: int  # registered to the holder (every status)
    inspected: int  # accounted chips with a completed (not refused) inspection in the period
    unaccounted: int  # lost, refused or placed outside their facility: outside the sampling
    unexplained_snapshots: int  # logged snapshots not (yet) explained by a verified transcript
    sampled_flops: float  # H* over the accounted chips
    unaccounted_flops: float  # unaccounted chips * a * T_m

    @property
    def max_hidden_flops(self) -> float:
        return self.sampled_flops + self.unaccounted_flops

    def to_json(self) -> dict[str, Any]:
        return {
            "chips": self.chips,
            "inspected": self.inspected,
            "unaccounted": self.unaccounted,
            "unexplained_snapshots": self.unexplained_snapshots,
            "max_hidden_flops": self.max_hidden_flops,
            "max_hidden_flops_sampled": self.sampled_flops,
            "max_hidden_flops_unaccounted": self.unaccounted_flops,
        }


def exposure(
    *, chips: int, accounted: int, inspected: int, unaccounted: int, unexplained_snapshots: int,
    a: float, f: float, T_m: float, p: float,
) -> Exposure:
    """The exposure of a stockpile: `accounted` chips sampled (`inspected` of them inspected),
    `unaccounted` chips outside the sampling."""
    sampled = sampled_hidden_flops(accounted, min(inspected, accounted), a=a, f=f, T_m=T_m, p=p)
    return Exposure(chips, inspected, unaccounted, unexplained_snapshots, sampled, unaccounted * a * T_m)
