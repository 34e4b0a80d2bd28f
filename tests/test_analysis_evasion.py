"""Appendix C: Figure 2 (fewer chips for longer) and Theorem 1 / Lemma 1 (more chips, less time)."""

from __future__ import annotations

import numpy as np
import pytest

from computewatch.analysis import (
    DETECTION_TARGET_FACTOR,
    InfeasibleSettingError,
    InvalidParameterError,
    Setting,
    detection_probability,
    figure2_grid,
    figure2_worst,
    incriminating_stretch,
    lemma1_gap,
    p_d_longer,
    p_d_more_chips,
    run_detection_probability,
    samples_exact,
    samples_for_probability,
)


def test_figure2_worst_ratio_is_three_percent() -> None:
    worst = figure2_worst()
    assert worst["ratio"] == pytest.approx(0.970, abs=5e-4)
    assert (worst["b"], worst["k"]) == (pytest.approx(0.2), pytest.approx(100.0))


def test_figure2_claim_holds_on_a_fine_grid() -> None:
    _k, _b, ratio = figure2_grid(k=np.linspace(1, 100, 991), b=np.linspace(1e-4, 0.2, 400))
    assert ratio.min() > 0.95  # "less than 5%"
    assert ratio.max() <= 1 + 1e-12
    assert np.allclose(ratio[:, 0], 1.0)  # k = 1 is the plan s was set for
    assert np.all(np.diff(ratio, axis=1) <= 1e-12)  # longer never helps the Verifier
    _, _, small = figure2_grid(k=np.array([100.0]), b=np.array([0.01]))
    assert 1 - small[0, 0] == pytest.approx(0.0013, abs=1e-4)  # the notes' 0.13% at b = 0.01


def test_c1_formula() -> None:
    s = samples_for_probability(0.9, 0.2)
    assert float(p_d_longer(1.0, 0.2, s)) == pytest.approx(0.9)
    assert float(p_d_longer(100.0, 0.2, s)) == pytest.approx(1 - (1 - 0.002) ** (100 * s))
    with pytest.raises(InvalidParameterError):
        p_d_longer(0.5, 0.2, s)
    with pytest.raises(InvalidParameterError):
        samples_for_probability(0.9, 1.2)


def test_lemma1_is_non_negative_and_zero_only_at_g_one() -> None:
    g, beta = np.meshgrid(np.linspace(1, 200, 300), np.linspace(1e-6, 1 - 1e-6, 300))
    gap = lemma1_gap(g, beta)
    assert gap.min() >= -1e-12
    assert np.allclose(lemma1_gap(1.0, beta[:, 0]), 0.0, atol=1e-12)
    assert np.all(lemma1_gap(2.0, np.array([0.1, 0.5, 0.9])) > 0)
    with pytest.raises(InvalidParameterError):
        lemma1_gap(0.5, 0.5)


def test_theorem1_more_chips_for_less_time_never_lowers_detection() -> None:
    setting = Setting(H=1e24, C=1e5)
    t = np.linspace(setting.chips_needed * setting.T / setting.C, setting.T, 500)
    for s in (1, 10, 100, 1000):
        p_d = p_d_more_chips(setting, s, t)
        assert np.all(np.diff(p_d) <= 1e-12), s  # p_d falls as t grows: shorter is worse for the Prover
    p_30, p_1 = p_d_more_chips(setting, 100, np.array([30.0, 1.0]))
    assert p_30 == pytest.approx(0.31, abs=0.005) and p_1 == pytest.approx(0.67, abs=0.005)
    # The strategy form agrees: k = 30 means 30 times the chips for a day.
    assert detection_probability(setting, 100, "more-shorter", 30.0) == pytest.approx(p_1)
    with pytest.raises(InvalidParameterError, match="too short"):
        p_d_more_chips(setting, 100, 0.01)


def test_the_2h_target_is_covered_by_a_plan_sized_for_h() -> None:
    setting = Setting(H=5.76e23, C=1e5)
    s = samples_exact(setting)
    assert DETECTION_TARGET_FACTOR == 2.0
    at_target = run_detection_probability(setting, s, 2 * setting.H)
    assert at_target >= setting.p  # Eq. 1 sized for H catches the second H of a 2H run
    # ... because that second H runs on twice the chips for half the time (Theorem 1's shape).
    assert at_target == pytest.approx(detection_probability(setting, s, "more-shorter", 2.0))
    stretch = incriminating_stretch(setting, 2 * setting.H)
    assert stretch.days == pytest.approx(15.0) and stretch.b == pytest.approx(2 * setting.b)
    assert run_detection_probability(setting, s, setting.H) == 0.0  # nothing past H to catch
    sizes = np.linspace(1.0, 8.0, 50) * setting.H
    probabilities = [run_detection_probability(setting, s, R) for R in sizes]
    assert np.all(np.diff(probabilities) >= 0)
    assert run_detection_probability(setting, s, 1.5 * setting.H) < setting.p  # below the target, no promise
    with pytest.raises(InfeasibleSettingError, match="stockpile"):
        incriminating_stretch(setting, 1e30)


def test_appendix_c_refuses_nan_and_negative_inputs() -> None:
    nan = float("nan")
    with pytest.raises(InvalidParameterError, match="s"):
        p_d_longer(2.0, 0.1, nan)
    with pytest.raises(InvalidParameterError, match="s"):
        p_d_longer(2.0, 0.1, -1.0)
    with pytest.raises(InvalidParameterError, match="Lemma 1"):
        lemma1_gap(nan, 0.5)
    with pytest.raises(InvalidParameterError, match="Lemma 1"):
        lemma1_gap(2.0, nan)
    setting = Setting(H=1e24, C=1e5)
    with pytest.raises(InvalidParameterError, match="t must lie"):
        p_d_more_chips(setting, 10, nan)
    with pytest.raises(InvalidParameterError, match="s"):
        p_d_more_chips(setting, nan, 10.0)


def test_fewer_longer_strategy_is_c1_when_snapshots_are_certain() -> None:
    # C.1 assumes every sampled run chip holds a snapshot: f*T_m large. Then Appendix B's form
    # for b/k of the chips over k*T days (k rounds) is C.1's 1 - (1 - b/k)^(k*s), written out.
    setting = Setting(H=1e25, C=1e5, f=50.0)
    for k in (1.0, 3.0, 10.0):
        expected = 1 - (1 - setting.b / k) ** (k * 40)
        assert detection_probability(setting, 40, "fewer-longer", k) == pytest.approx(expected, rel=1e-9)
