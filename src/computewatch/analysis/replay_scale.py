"""What verifying by replay costs a regime: replay FLOPs per run, per year, and the cluster that
does them (docs/verifier.md, "Scaling model"; issue 24).

A declared run of H FLOPs is verified by replaying a share s of its checkpoint-to-checkpoint
segments (or of its steps, with step challenges): every snapshot segment, plus the random draws
that reach the forgery-detection target. Replay repeats the training arithmetic, so it costs
s x H FLOPs, done on the Verifier's chips at their utilization u. With N declared runs a year:

    replay FLOPs per year   F = N x s x mean(H)
    cluster (chips)         K = F / (a x DAYS_PER_YEAR x u)

a being a chip's peak FLOPs per day (Table 1's a: an H100's 16-bit 10^15 FLOP/s). The Verifier's
own work besides replay (staging, hashing, starting sandboxes) is per run and per byte, not per
FLOP: seconds of one core per run, which 10^4 runs a year turn into hours, not chips.
"""

from __future__ import annotations

from dataclasses import dataclass

from computewatch.analysis.errors import InvalidParameterError
from computewatch.analysis.params import DAYS_PER_YEAR, H100_FLOPS_PER_DAY

__all__ = ["ReplayScale", "replay_scale", "replayed_share"]


@dataclass(frozen=True)
class ReplayScale:
    runs_per_year: float
    flops_per_run: float  # mean H of a declared run
    replayed_share: float  # s
    utilization: float  # u of the Verifier's chips
    chip_flops_per_day: float  # a

    @property
    def replay_flops_per_run(self) -> float:
        return self.replayed_share * self.flops_per_run

    @property
    def replay_flops_per_year(self) -> float:
        return self.runs_per_year * self.replay_flops_per_run

    @property
    def chips(self) -> float:
        """Chips replaying all year round at utilization u."""
        return self.replay_flops_per_year / (self.chip_flops_per_day * DAYS_PER_YEAR * self.utilization)

    def to_json(self) -> dict[str, float]:
        return {"runs_per_year": self.runs_per_year, "flops_per_run": self.flops_per_run, "replayed_share": self.replayed_share,
                "utilization": self.utilization, "replay_flops_per_run": self.replay_flops_per_run,
                "replay_flops_per_year": self.replay_flops_per_year, "chips": self.chips}


def replayed_share(snapshot_share: float, detection_target: float) -> float:
    """s when every segment holding a snapshot of an inspected chip is replayed (`snapshot_share`
    of them) and random draws among the others reach `detection_target` for a one-segment
    forgery (verifier/selection.py's default rule): snapshot_share + target x (1 - snapshot_share)."""
    for name, v in (("snapshot_share", snapshot_share), ("detection_target", detection_target)):
        if not 0.0 <= v <= 1.0:
            raise InvalidParameterError(f"{name} must lie in [0, 1], got {v!r}")
    return snapshot_share + detection_target * (1.0 - snapshot_share)


def replay_scale(runs_per_year: float, flops_per_run: float, share: float, *, utilization: float = 0.4,
                 chip_flops_per_day: float = H100_FLOPS_PER_DAY) -> ReplayScale:
    """The replay cluster of a regime (module docstring)."""
    for name, v in (("runs_per_year", runs_per_year), ("flops_per_run", flops_per_run), ("chip_flops_per_day", chip_flops_per_day)):
        if not v > 0:
            raise InvalidParameterError(f"{name} must be positive, got {v!r}")
    if not 0.0 <= share <= 1.0:
        raise InvalidParameterError(f"the replayed share must lie in [0, 1], got {share!r}")
    if not 0.0 < utilization <= 1.0:
        raise InvalidParameterError(f"utilization must lie in (0, 1], got {utilization!r}")
    return ReplayScale(runs_per_year, flops_per_run, share, utilization, chip_flops_per_day)
