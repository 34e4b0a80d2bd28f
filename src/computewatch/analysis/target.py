"""The 2H detection target (§3.2, footnote 3).

Snapshots from a run's first H FLOPs incriminate nobody (the Prover could have stopped there),
so the guarantee is stated for runs of at least 2H: a snapshot from the stretch after the first
H FLOPs is what "detecting a large-scale run" means. A run of R FLOPs over T days on the fewest
chips (R/(a*T)) spends its last T*(R - H)/R days on that stretch. For R = 2H that is the second
half of the run on twice the chips: Theorem 1's more-chips-for-less-time shape, so a plan sized
by Eq. 1 for an H-FLOP run over T catches it at least as often.
"""

from __future__ import annotations

import math

from computewatch.analysis.detection import RunShape, shape_detection_probability
from computewatch.analysis.errors import InfeasibleSettingError, InvalidParameterError
from computewatch.analysis.params import Setting

__all__ = ["DETECTION_TARGET_FACTOR", "incriminating_stretch", "run_detection_probability"]

# Guarantees cover runs of at least this multiple of the threshold H.
DETECTION_TARGET_FACTOR = 2.0


def incriminating_stretch(setting: Setting, run_flops: float) -> RunShape:
    """The part of a `run_flops` run (over T days, fewest chips) whose snapshots show a model
    trained past H: the run's chip fraction, for its last T*(R - H)/R days."""
    if not math.isfinite(run_flops) or run_flops <= 0:
        raise InvalidParameterError(f"the run's FLOPs must be a positive number, got {run_flops!r}")
    fraction = run_flops / (setting.a * setting.T * setting.C)
    if fraction > 1.0:
        raise InfeasibleSettingError(
            f"a run of {run_flops:g} FLOPs needs {fraction:.3g} times the stockpile of C = {setting.C:g} "
            f"chips to finish within T = {setting.T:g} days"
        )
    return RunShape(b=fraction, days=setting.T * max(0.0, run_flops - setting.H) / run_flops)


def run_detection_probability(setting: Setting, s: float, run_flops: float) -> float:
    """Appendix B's probability of catching a snapshot from the incriminating stretch of a
    `run_flops` run that starts at a period boundary; 0 for runs of at most H FLOPs."""
    if not math.isfinite(s) or s < 0:
        raise InvalidParameterError(f"samples per period must be a non-negative number, got {s!r}")
    # The stretch starts where the first H FLOPs end, mid-period in general; Appendix B's count
    # of full rounds is then an approximation (docs/analysis.md, closed form vs Monte Carlo).
    return shape_detection_probability(incriminating_stretch(setting, run_flops), s, setting.f, setting.T_m)
