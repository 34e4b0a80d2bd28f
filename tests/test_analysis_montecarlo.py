"""The Monte Carlo world against the closed forms: where they agree, and where Appendix B's
assumptions (aligned start, T a multiple of T_m, independent samples) break."""

from __future__ import annotations

import math

import numpy as np
import pytest

from computewatch.analysis import (
    H100_FLOPS_PER_DAY,
    InfeasibleSettingError,
    InvalidParameterError,
    Setting,
    detection_probability,
    detection_probability_windowed,
    inspection_windows,
    simulate,
    simulate_enumerating,
    wilson_interval,
)

TRIALS = 40_000


def _setting(c: int, C: float, T: float = 30.0, **kw: float) -> Setting:
    """A setting whose run needs exactly c chips, so the simulator's whole chips match b."""
    return Setting(H=c * H100_FLOPS_PER_DAY * T, C=C, T=T, **kw)


def _appendix_b(setting: Setting, s: int, rounds: int) -> float:
    # Written out independently of the library, with the round count as a parameter.
    return 1 - (1 - setting.b * (1 - math.exp(-setting.f * setting.T_m))) ** (s * rounds)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(0, 100)
    assert lo == 0.0 and 0.03 < hi < 0.04
    with pytest.raises(InvalidParameterError):
        wilson_interval(5, 0)


def test_aligned_start_whole_periods_matches_appendix_b() -> None:
    setting = _setting(400, 1e7)  # s/C = 0.2%: drawing without replacement changes nothing visible
    result = simulate(setting, 20_000, TRIALS, seed=1, offset=0.0)
    assert result.closed_form == pytest.approx(_appendix_b(setting, 20_000, 1))
    assert result.agrees(result.closed_form)


def test_ceil_of_T_over_T_m_is_checked_where_it_matters() -> None:
    # T = 2.5*T_m, aligned start, f high enough that every run chip has logged a snapshot by the
    # first inspection: exactly ceil(2.5) = 3 rounds. Two or four rounds fall outside the CI.
    setting = _setting(40, 1e5, T=75.0, f=1.0)
    result = simulate(setting, 250, TRIALS, seed=2, offset=0.0)
    assert result.agrees(_appendix_b(setting, 250, 3))
    assert result.agrees(result.closed_form)
    assert not result.agrees(_appendix_b(setting, 250, 2))
    assert not result.agrees(_appendix_b(setting, 250, 4))


def test_mid_period_start_makes_appendix_b_conservative() -> None:
    # Runs starting inside a period are also seen by the inspection after they end.
    setting = _setting(40, 1e5)
    result = simulate(setting, 1000, TRIALS, seed=3)
    assert result.ci95[0] > result.closed_form + 0.1
    assert result.agrees(detection_probability_windowed(setting, 1000))


@pytest.mark.parametrize("offset", [None, 14.0])
def test_T_not_a_multiple_of_T_m_makes_appendix_b_optimistic(offset: float | None) -> None:
    # T = 31 days counts as two full rounds in Appendix B, but a run starting late in a period
    # gives its first inspection only a sliver of the run (footnote 24 (ii)).
    setting = _setting(40, 1e5, T=31.0, f=0.02) if offset is None else _setting(40, 1e5, T=45.0, f=0.05)
    result = simulate(setting, 1500, TRIALS, seed=4, offset=offset)
    assert result.ci95[1] < result.closed_form
    assert result.agrees(detection_probability_windowed(setting, 1500, offset=offset))


def test_small_stockpile_sampling_without_replacement_beats_the_binomial() -> None:
    # 20 of 100 chips a period: drawing distinct chips finds the 5 run chips more often than
    # the independent-samples closed forms assume, so both are conservative here.
    setting = _setting(5, 100)
    result = simulate(setting, 20, TRIALS, seed=5, offset=0.0)
    assert result.ci95[0] > detection_probability_windowed(setting, 20, offset=0.0) + 0.02
    exact = 1 - sum(
        math.comb(5, j) * math.comb(95, 20 - j) / math.comb(100, 20) * math.exp(-3) ** j for j in range(6)
    )
    assert result.agrees(exact)  # the hypergeometric count of run chips, each snapshotted w.p. 1 - e^-3


@pytest.mark.parametrize("strategy, k", [("fewer-longer", 4.0), ("more-shorter", 4.0), ("minimum", 1.0)])
def test_prover_strategies_match_the_windowed_form(strategy: str, k: float) -> None:
    setting = _setting(40, 1e5)
    result = simulate(setting, 1000, TRIALS, strategy=strategy, k=k, seed=6)
    assert result.agrees(detection_probability_windowed(setting, 1000, strategy, k))
    assert result.closed_form == pytest.approx(detection_probability(setting, 1000, strategy, k))


def test_fast_simulator_agrees_with_the_enumerating_one() -> None:
    setting = _setting(20, 1000, T=45.0, f=0.05)
    fast = simulate(setting, 15, 20_000, seed=7)
    naive = simulate_enumerating(setting, 15, 1500, seed=8)
    sigma = math.sqrt(fast.estimate * (1 - fast.estimate) * (1 / fast.trials + 1 / naive.trials))
    assert abs(fast.estimate - naive.estimate) < 4 * sigma
    assert 0.2 < fast.estimate < 0.9  # a setting where a wrong model would show


def test_seeds_and_chunks() -> None:
    setting = _setting(40, 1e5)
    one = simulate(setting, 500, 70_000, seed=9)  # more than one chunk
    assert one == simulate(setting, 500, 70_000, seed=9)
    seen: list[int] = []
    simulate(setting, 500, 70_000, seed=9, progress=seen.append)
    assert seen[-1] == 70_000 and len(seen) >= 2 and seen == sorted(seen)
    assert simulate(setting, 0, 1000, seed=1).detected == 0


def test_chinchilla_at_ten_million_chips_runs_without_enumerating() -> None:
    setting = Setting(H=5.76e23, C=1e7)
    result = simulate(setting, 109_045, 20_000, seed=10)
    # The simulated run occupies ceil(222.2) = 223 whole chips; compare like with like.
    whole_chips = setting.replace(H=223 * H100_FLOPS_PER_DAY * setting.T)
    assert result.agrees(detection_probability_windowed(whole_chips, 109_045))
    assert result.ci95[0] > result.closed_form  # Eq. 1's s gives p = 0.9 only for aligned starts


def test_inspection_windows() -> None:
    assert inspection_windows(60.0, 30.0, 0.0).tolist() == [30.0, 60.0]
    assert inspection_windows(60.0, 30.0, 10.0).tolist() == [20.0, 50.0, 60.0]
    assert inspection_windows(31.0, 30.0, 29.5).tolist() == pytest.approx([0.5, 30.5, 31.0])
    with pytest.raises(InvalidParameterError):
        inspection_windows(30.0, 30.0, 30.0)


def test_windowed_form_reduces_to_appendix_b_when_its_assumptions_hold() -> None:
    setting = _setting(40, 1e5, T=90.0, f=0.1)
    windows = inspection_windows(90.0, 30.0, 0.0)
    assert np.all(windows >= 30.0)
    # With the snapshot saturated (f*T_m large) every window behaves like a full period.
    saturated = setting.replace(f=5.0)
    assert detection_probability_windowed(saturated, 100, offset=0.0) == pytest.approx(
        detection_probability(saturated, 100), rel=1e-9
    )


def test_simulator_input_checks() -> None:
    setting = _setting(40, 1e5)
    with pytest.raises(InvalidParameterError, match="whole number of chips"):
        simulate(Setting(H=1e23, C=1e5 + 0.5), 10, 10)
    with pytest.raises(InvalidParameterError, match="trials"):
        simulate(setting, 10, 0)
    with pytest.raises(InvalidParameterError, match="samples"):
        simulate(setting, 10**6, 10)
    with pytest.raises(InfeasibleSettingError, match="stockpile"):
        simulate(setting, 10, 10, strategy="more-shorter", k=5000.0)
    with pytest.raises(InvalidParameterError, match="strategy"):
        simulate(setting, 10, 10, strategy="teleport")
    with pytest.raises(InvalidParameterError, match="below 1e"):  # numpy's hypergeometric limit
        simulate(Setting(H=5.76e23, C=1e10), 100, 10)


@pytest.mark.parametrize("c, per_row", [(1000, 3), (40, 30)])  # rejection path, permutation path
def test_drawn_run_chips_are_distinct_and_uniform(c: int, per_row: int) -> None:
    from computewatch.analysis.montecarlo import _distinct_chip_ids

    rng = np.random.default_rng(11)
    hits = rng.integers(0, per_row + 1, size=4000)
    ids = _distinct_chip_ids(rng, hits, c)
    assert ids.size == hits.sum() and ids.min() >= 0 and ids.max() < c
    rows = np.repeat(np.arange(hits.size), hits)
    assert np.unique(rows * c + ids).size == ids.size  # no chip twice in one inspection
    counts = np.bincount(ids, minlength=c)
    expected = ids.size / c
    assert ((counts - expected) ** 2 / expected).sum() < c + 5 * math.sqrt(2 * c)  # chi-square, ~5 sigma


def test_windowed_average_is_the_mean_over_start_offsets() -> None:
    setting = _setting(40, 1e5, T=31.0, f=0.02)  # the inspection count jumps at offset 29
    grid = (np.arange(6000) + 0.5) * setting.T_m / 6000
    brute = np.mean([detection_probability_windowed(setting, 1500, offset=o) for o in grid])
    assert detection_probability_windowed(setting, 1500) == pytest.approx(brute, abs=2e-5)
