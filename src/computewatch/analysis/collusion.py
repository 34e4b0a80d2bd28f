"""Collusion (§3.2): several Provers pool chips into one run that none could do alone.

A Verifier that sizes each Prover's audit by Eq. 1 for that Prover alone samples nothing from a
Prover whose stockpile cannot train H within T (b >= 1 is not a threat it can carry out alone),
and only a little from the rest; the pooled run then escapes. The paper's countermeasure treats
the world as one Prover whose stockpile is the sum: `pooled_setting`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from computewatch.analysis.errors import InvalidParameterError
from computewatch.analysis.params import Setting
from computewatch.analysis.sampling import samples_exact

__all__ = [
    "colluding_detection_probability",
    "per_prover_samples",
    "pooled_setting",
    "proportional_contributions",
]


def _check_stockpiles(stockpiles: Sequence[float]) -> None:
    if not stockpiles or any(not math.isfinite(C) or C <= 0 for C in stockpiles):
        raise InvalidParameterError("stockpiles must be a non-empty list of positive chip counts")


def pooled_setting(setting: Setting, stockpiles: Sequence[float]) -> Setting:
    """The world as one Prover: the same run against the sum of the stockpiles."""
    _check_stockpiles(stockpiles)
    return setting.replace(C=float(sum(stockpiles)))


def per_prover_samples(setting: Setting, stockpiles: Sequence[float]) -> list[int]:
    """Eq. 1 (exact) for each Prover alone; 0 where that Prover alone cannot do the run."""
    _check_stockpiles(stockpiles)
    samples = []
    for C in stockpiles:
        alone = setting.replace(C=float(C))
        samples.append(0 if alone.infeasibility() is not None else samples_exact(alone))
    return samples


def proportional_contributions(setting: Setting, stockpiles: Sequence[float]) -> list[float]:
    """Chips each Prover lends so that the run uses the same fraction b of every stockpile."""
    pooled = pooled_setting(setting, stockpiles)
    if pooled.b > 1:
        raise InvalidParameterError(f"even pooled, the {pooled.C:g} chips cannot train H within T")
    return [pooled.b * C for C in stockpiles]


def colluding_detection_probability(
    setting: Setting,
    stockpiles: Sequence[float],
    contributions: Sequence[float],
    samples_per_period: Sequence[float],
) -> float:
    """Appendix B's detection probability for one run spread over several audited Provers.

    Prover i lends contributions[i] of its stockpiles[i] chips and is sampled
    samples_per_period[i] times per period; misses multiply across Provers.
    """
    _check_stockpiles(stockpiles)
    if not (len(stockpiles) == len(contributions) == len(samples_per_period)):
        raise InvalidParameterError("stockpiles, contributions and samples need one entry per Prover")
    if any(not (0 <= c <= C) for c, C in zip(contributions, stockpiles, strict=True)):
        raise InvalidParameterError("each contribution must lie between 0 and that Prover's stockpile")
    if any(not (math.isfinite(s) and s >= 0) for s in samples_per_period):
        raise InvalidParameterError("samples per period must be finite numbers >= 0")
    if sum(contributions) < setting.chips_needed * (1 - 1e-9):
        raise InvalidParameterError(
            f"the contributions ({sum(contributions):g} chips) cannot train H within T "
            f"(needs {setting.chips_needed:g})"
        )
    log_miss = 0.0
    for c, C, s in zip(contributions, stockpiles, samples_per_period, strict=True):
        per_sample_hit = (c / C) * setting.snapshot_probability
        if per_sample_hit >= 1.0 and s > 0:
            return 1.0
        log_miss += s * setting.rounds * math.log1p(-per_sample_hit)
    return -math.expm1(log_miss)
