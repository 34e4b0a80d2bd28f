"""Bounds on tolerance mode that the Prover's program cannot move.

Epsilon is calibrated from the Verifier's own replays under different thread counts, but those
replays run the Prover's program: a program that adds noise only when the thread count differs
from the recorded one (that is, only in calibration) inflates epsilon until a forged segment
passes. Two bounds close that, whatever the calibration measured:

* `EPSILON_CAP`: epsilon never exceeds 1e-3 (relative L2 distance normalised by the segment's
  update). Honest reproduction noise of float32 CPU training measures 1e-7 to 1e-6 on the test
  runs (docs/verifier.md, "Replay modes"), so the cap leaves a hundred times the largest
  calibrated epsilon seen (10 x noise); the smallest forgery the calibration tries, lr +1%,
  measures about 9e-3, nine times above the cap. A segment whose honest noise really exceeds
  the cap cannot be verified in tolerance mode, and fails rather than passing on the Prover's
  word.
* `FALSE_ACCEPT_BOUND`: the calibration's spoofed replays (lr +1%, one batch swapped) are the
  smallest forgeries the Verifier tries; if any of them lies within epsilon, epsilon cannot tell
  a forgery from noise, and the tolerance verdict is a `segments` finding, not a footnote.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EPSILON_CAP", "FALSE_ACCEPT_BOUND", "bound_tolerance", "tolerance_findings"]

EPSILON_CAP = 1e-3
FALSE_ACCEPT_BOUND = 0.0


def bound_tolerance(tolerance: dict[str, Any]) -> dict[str, Any]:
    """The calibration with epsilon capped at `EPSILON_CAP` (the measured value is kept as
    `epsilon_calibrated`) and the false-accept rate recomputed against the capped epsilon."""
    out = dict(tolerance)
    calibrated = float(out.get("epsilon", 0.0))
    out["epsilon_calibrated"] = calibrated
    out["epsilon_cap"] = EPSILON_CAP
    out["false_accept_bound"] = FALSE_ACCEPT_BOUND
    if not calibrated <= EPSILON_CAP:  # also NaN
        out["epsilon"] = EPSILON_CAP
        spoofs = out.get("spoof_relative") or []
        honest = out.get("honest_relative") or []
        if spoofs:
            out["false_accept_rate"] = sum(d <= EPSILON_CAP for d in spoofs) / len(spoofs)
        if honest:
            out["false_reject_rate"] = sum(d > EPSILON_CAP for d in honest) / len(honest)
    return out


def tolerance_findings(tolerance: dict[str, Any]) -> list[str]:
    """`segments` findings of a (bounded) calibration."""
    out = []
    far = tolerance.get("false_accept_rate")
    if far is not None and far > FALSE_ACCEPT_BOUND:
        out.append(f"tolerance calibration: {far:.0%} of the spoofed replays (lr +1%, one batch swapped) lie within epsilon {tolerance['epsilon']:.3e}, above the bound of {FALSE_ACCEPT_BOUND:.0%}: epsilon cannot tell a forgery from noise")
    calibrated = tolerance.get("epsilon_calibrated")
    if calibrated is not None and not calibrated <= EPSILON_CAP:
        out.append(f"tolerance calibration: the replays' own noise gives epsilon {calibrated:.3e}, above the cap {EPSILON_CAP:.0e}; segments are compared at the cap (noise that large comes from the program, not from floating point)")
    return out
