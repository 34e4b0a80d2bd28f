"""Detection of a forged checkpoint-to-checkpoint segment by the Verifier's replay sampling.

A Prover that forges the update of one segment (the checkpoint after it does not follow from the
one before it) knows which segments the Verifier picks for deterministic reasons: every segment
that holds a logged snapshot and PoL's top-Q largest updates. It forges one of the others.
Of those ``eligible`` segments the Verifier replays ``count`` drawn uniformly without
replacement with its secret seed, so a one-segment forgery is caught with probability
``count / eligible``; a forgery spread over ``forged`` segments is missed only if every draw
avoids all of them (hypergeometric).
"""

from __future__ import annotations

import math

from computewatch.analysis.errors import InvalidParameterError

__all__ = ["DEFAULT_SEGMENT_DETECTION", "forgery_detection", "segments_for_detection"]

# The default per-verification chance of replaying a forged segment. One half: a Prover who
# forges one segment of a run is caught with probability 1/2 in every verification of it, and
# with 1 - 2^-k over k independent verifications (a re-verification draws a fresh seed); a
# higher target costs replay time linearly (count = target x eligible segments).
DEFAULT_SEGMENT_DETECTION = 0.5


def _check_counts(eligible: int, count: int, forged: int) -> None:
    for name, value in (("eligible", eligible), ("count", count), ("forged", forged)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidParameterError(f"{name} must be a non-negative integer, got {value!r}")
    if forged > eligible:
        raise InvalidParameterError(f"forged segments ({forged}) cannot exceed eligible ones ({eligible})")


def forgery_detection(eligible: int, count: int, forged: int = 1) -> float:
    """P(at least one of `count` uniform draws without replacement from `eligible` segments
    hits one of `forged` forged segments). 1.0 when nothing is eligible to forge (every segment
    is replayed for a deterministic reason)."""
    if eligible == 0:
        return 1.0
    _check_counts(eligible, count, forged)
    if forged == 0:
        return 0.0
    count = min(count, eligible)
    if count > eligible - forged:
        return 1.0
    miss = math.comb(eligible - forged, count) / math.comb(eligible, count)
    return 1.0 - miss


def segments_for_detection(eligible: int, target: float = DEFAULT_SEGMENT_DETECTION, forged: int = 1) -> int:
    """The fewest random segments whose one-segment (or `forged`-segment) forgery detection
    reaches `target` (at least one when anything is eligible)."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise InvalidParameterError(f"the detection target must be in (0, 1], got {target!r}")
    _check_counts(eligible, 0, min(forged, eligible))
    if eligible == 0:
        return 0
    for count in range(1, eligible + 1):
        if forgery_detection(eligible, count, min(forged, eligible)) >= target - 1e-12:
            return count
    return eligible
