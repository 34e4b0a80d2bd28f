"""The replay-cost scaling model (analysis/replay_scale.py, docs/verifier.md "Scaling model")."""

from __future__ import annotations

import math

import pytest

from computewatch.analysis.errors import InvalidParameterError
from computewatch.analysis.params import DAYS_PER_YEAR, H100_FLOPS_PER_DAY
from computewatch.analysis.replay_scale import replay_scale, replayed_share


def test_the_cluster_is_the_replayed_share_of_the_declared_compute_over_a_chip_year() -> None:
    r = replay_scale(1e4, 5.76e23, 0.5, utilization=0.4)
    assert math.isclose(r.replay_flops_per_run, 2.88e23)
    assert math.isclose(r.replay_flops_per_year, 2.88e27)
    assert math.isclose(r.chips, 2.88e27 / (H100_FLOPS_PER_DAY * DAYS_PER_YEAR * 0.4))
    # Linear in each factor: ten times the runs, ten times the chips; double utilization, half.
    assert math.isclose(replay_scale(1e5, 5.76e23, 0.5).chips, 10 * r.chips)
    assert math.isclose(replay_scale(1e4, 5.76e23, 0.5, utilization=0.8).chips, r.chips / 2)


def test_the_default_draw_replays_every_snapshot_segment_and_half_of_the_rest() -> None:
    assert math.isclose(replayed_share(0.083, 0.5), 0.5415)
    assert replayed_share(1.0, 0.5) == 1.0 and replayed_share(0.0, 0.0) == 0.0


@pytest.mark.parametrize("args", [(0, 1e23, 0.5), (1e4, -1.0, 0.5), (1e4, 1e23, 1.5)])
def test_bad_settings_are_refused_by_name(args: tuple[float, float, float]) -> None:
    with pytest.raises(InvalidParameterError):
        replay_scale(*args)
    with pytest.raises(InvalidParameterError, match="utilization"):
        replay_scale(1e4, 1e23, 0.5, utilization=0.0)
    with pytest.raises(InvalidParameterError, match="snapshot_share"):
        replayed_share(1.2, 0.5)
