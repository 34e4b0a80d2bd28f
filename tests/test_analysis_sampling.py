"""Eq. 1 in its linear and exact forms, and the plan's reporting policy."""

from __future__ import annotations

import math

import pytest

from computewatch.analysis import (
    InfeasibleSettingError,
    InvalidParameterError,
    Setting,
    detection_probability,
    plan,
    samples_exact,
    samples_exact_continuous,
    samples_linear,
)


def _exact_probability(setting: Setting, s: int) -> float:
    # Appendix B as mended: p = 1 - (1 - b*p_w)^(s*ceil(T/T_m)), written out independently.
    x = setting.b * (1 - math.exp(-setting.f * setting.T_m))
    return 1 - (1 - x) ** (s * math.ceil(setting.T / setting.T_m))


def test_linear_form_matches_the_printed_equation() -> None:
    setting = Setting(H=3.14e23, C=1e3)
    expected = -math.log(0.1) / (setting.b * (1 - math.exp(-3)))
    assert samples_linear(setting) == pytest.approx(expected, rel=1e-12)
    # The T_m/T factor: a run twice as long halves s (per period).
    longer = setting.replace(T=60.0)
    assert samples_linear(longer) == pytest.approx(samples_linear(setting), rel=1e-12)  # b halves too
    assert samples_linear(setting.replace(T_m=15.0)) < samples_linear(setting)


@pytest.mark.parametrize(
    "H, C, T, T_m, f",
    [(3.14e23, 1e3, 30, 30, 0.1), (2.56e24, 1e3, 30, 30, 0.1), (1e24, 1e5, 75, 30, 0.1), (5e23, 1e4, 10, 30, 0.5)],
)
def test_exact_form_is_the_smallest_sufficient_integer(H: float, C: float, T: float, T_m: float, f: float) -> None:
    setting = Setting(H=H, C=C, T=T, T_m=T_m, f=f)
    s = samples_exact(setting)
    assert _exact_probability(setting, s) >= setting.p
    assert s == 1 or _exact_probability(setting, s - 1) < setting.p
    assert s == math.ceil(samples_exact_continuous(setting))


def test_exact_form_values_quoted_in_the_notes() -> None:
    # (recomputed) exact Eq. 1 at C = 10^3: GPT-3 229, Chinchilla 118, PaLM 10 samples a year.
    yearly = {H: samples_exact_continuous(Setting(H=H, C=1e3)) * 365 / 30 for H in (3.14e23, 5.76e23, 2.56e24)}
    assert round(yearly[3.14e23]) == 229
    assert round(yearly[5.76e23]) == 118
    assert round(yearly[2.56e24]) == 10
    # The integer plan for GPT-3 is 19 chips a month (231 a year), for PaLM a single chip.
    assert samples_exact(Setting(H=3.14e23, C=1e3)) == 19
    assert samples_exact(Setting(H=2.56e24, C=1e3)) == 1


def test_forms_agree_for_large_stockpiles_and_linear_is_conservative() -> None:
    for H in (3.14e23, 2.56e24, 9.9e24):
        setting = Setting(H=H, C=1e7)
        assert samples_exact_continuous(setting) == pytest.approx(samples_linear(setting), rel=1e-3)
        assert samples_exact_continuous(setting) < samples_linear(setting)  # -ln(1-x) > x


def test_exact_form_refuses_impossible_settings() -> None:
    with pytest.raises(InfeasibleSettingError, match=">= 1"):
        samples_exact(Setting(H=9.9e24, C=1e3))
    with pytest.raises(InfeasibleSettingError, match="within a year"):
        samples_exact(Setting(H=1.3e28, C=1e5))


def test_plan_policy_for_impossible_settings() -> None:
    # b = 3.8 >= 1: linear gives the paper's number but says infeasible; exact has no number.
    linear = plan(Setting(H=9.9e24, C=1e3), "linear")
    assert linear.samples_per_year is not None and math.floor(linear.samples_per_year) == 7
    assert not linear.feasible and linear.detection_probability is None and ">= 1" in (linear.reason or "")
    exact = plan(Setting(H=9.9e24, C=1e3), "exact")
    assert exact.samples_per_period is None and exact.samples_per_year is None and not exact.feasible
    # The paper's "—": no number under either form.
    for formula in ("linear", "exact"):
        dash = plan(Setting(H=1.27e26, C=1e3), formula)
        assert dash.samples_per_period is None and not dash.feasible and "within a year" in (dash.reason or "")
    with pytest.raises(InvalidParameterError, match="formula"):
        plan(Setting(H=1e24, C=1e5), "quadratic")


def test_plan_reports_the_probability_of_the_integer_plan() -> None:
    setting = Setting(H=5.76e23, C=1e5)
    result = plan(setting, "exact")
    assert result.feasible and result.reason is None
    assert result.samples_per_period == samples_exact(setting)
    assert result.samples_per_year == pytest.approx(result.samples_per_period * 365 / 30)
    assert result.detection_probability == pytest.approx(_exact_probability(setting, samples_exact(setting)))
    assert result.detection_probability >= 0.9
    linear = plan(setting, "linear")
    assert linear.detection_probability == pytest.approx(
        detection_probability(setting, math.ceil(samples_linear(setting)))
    )
