"""The HTML report's section on step challenges (issue 19): spot checks and localized disputes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from computewatch.verifier.report import _dict, _e, _kv, _list, _table

__all__ = ["render_steps"]


def render_steps(v: Mapping[str, Any]) -> str:
    """Spot checks (drawn, passed, failed, cost share) and every localized divergence: the run,
    the step and the first diverging operator, with the bisection rounds it took."""
    located = []
    for loc in map(_dict, _list(v.get("localized"))):
        dist = loc.get("distance")
        nxt = loc.get("next_challenge")
        located.append([
            _e(loc.get("run")), _e(loc.get("segment")), _e(loc.get("step")), _e(loc.get("operator")),
            _e(loc.get("operator_index")), _e(f"{loc.get('rounds')} of at most {loc.get('round_bound')}"),
            _e(f"{dist:.3e}" if isinstance(dist, (int, float)) else "exact mismatch"),
            _e(f"challenge step {nxt} next" if nxt is not None else (loc.get("note") or "")),
        ])
    localized = "<h3>localized</h3>" + _table(["run", "segment", "step", "operator", "operator index", "rounds", "distance", "next"], located,
                                              bad=[True] * len(located), empty="nothing to localize")
    spot = v.get("spot_checks")
    if not spot:
        return "<p class=note>no step challenge was answered for this verdict</p>" + (localized if located else "")
    spot = _dict(spot)
    share = spot.get("cost_share")
    rows = [
        ("steps drawn", _e(spot.get("drawn"))),
        ("passed", _e(spot.get("passed"))),
        ("replayed steps", _e(spot.get("replayed_steps"))),
        ("cost share (replayed / training FLOPs)", _e(f"{share:.3%}" if isinstance(share, (int, float)) else "unknown")),
    ]
    failed = [[_e(f.get("run")), _e(f.get("step")), _e(f.get("rank"))] for f in map(_dict, _list(spot.get("failed")))]
    return (
        _kv(rows)
        + "<h3>failed spot checks</h3>"
        + _table(["run", "step", "rank"], failed, bad=[True] * len(failed), empty="none")
        + localized
    )
