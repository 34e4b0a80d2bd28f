"""The paper's symbols: validation, derived quantities, impossible settings."""

from __future__ import annotations

import math
import re

import pytest

from computewatch.analysis import (
    H100_FLOPS_PER_DAY,
    AnalysisError,
    InvalidParameterError,
    Setting,
)
from computewatch.analysis.params import ceil_tolerant
from computewatch.crypto.errors import ComputewatchError


def test_defaults_are_table1_settings() -> None:
    setting = Setting(H=1e24, C=1e5)
    assert H100_FLOPS_PER_DAY == 8.64e19
    assert (setting.a, setting.f, setting.T, setting.T_m, setting.p) == (8.64e19, 0.1, 30.0, 30.0, 0.9)


def test_derived_quantities() -> None:
    setting = Setting(H=9.9e24, C=1e3)
    assert setting.b == pytest.approx(9.9e24 / (8.64e19 * 30 * 1e3))
    assert setting.chip_days == pytest.approx(114583.333, rel=1e-6)
    assert setting.chips_needed == pytest.approx(3819.444, rel=1e-6)
    assert setting.chips_for_one_year == 314
    assert setting.snapshot_probability == pytest.approx(1 - math.exp(-3))
    assert Setting(H=1e24, C=1e5, T=75).rounds == 3
    assert Setting(H=1e24, C=1e5, T=60).rounds == 2  # exactly two periods: no spurious third


@pytest.mark.parametrize(
    "field, value",
    [("p", 0.0), ("p", 1.0), ("p", 1.5), ("p", -0.1), ("H", 0.0), ("C", -5.0), ("a", 0.0),
     ("f", -0.1), ("T", 0.0), ("T_m", float("nan")), ("C", float("inf"))],
)
def test_invalid_parameters_are_refused_with_the_symbol_named(field: str, value: float) -> None:
    kwargs = {"H": 1e24, "C": 1e5, field: value}
    with pytest.raises(InvalidParameterError, match=field):
        Setting(**kwargs)


def test_errors_join_the_project_hierarchy() -> None:
    assert issubclass(InvalidParameterError, AnalysisError)
    assert issubclass(AnalysisError, ComputewatchError)
    assert issubclass(AnalysisError, ValueError)


def test_infeasibility_reasons() -> None:
    assert Setting(H=1e24, C=1e5).infeasibility() is None
    beyond_year = Setting(H=1.27e26, C=1e3).infeasibility()
    assert beyond_year is not None and "within a year" in beyond_year and "4,028" in beyond_year
    beyond_T = Setting(H=9.9e24, C=1e3).infeasibility()
    assert beyond_T is not None and "b = H/(a*T*C) = 3.82 >= 1" in beyond_T


def test_ceil_tolerant_ignores_float_noise_only() -> None:
    assert ceil_tolerant(3.0000000000000004) == 3
    assert ceil_tolerant(3.000001) == 4
    assert ceil_tolerant(2.5) == 3
    assert ceil_tolerant(0.7 / 0.1) == 7


@pytest.mark.parametrize(
    "kwargs, named",
    [({"H": 1e-300, "C": 1e300}, "b = H/(a*T*C)"),  # b underflows to 0
     ({"H": 1e24, "C": 1e5, "T": 1e-320}, "b = H/(a*T*C)"),  # b overflows
     ({"H": 1e308, "C": 1e10, "a": 1e-5}, "H/(365*a)"),
     ({"H": 1e24, "C": 1e5, "T": 1e10, "T_m": 1e-300}, "T/T_m"),
     ({"H": 1e24, "C": 1e5, "f": 1e-320}, "Eq. 1's s")],  # p_w so small that s is infinite
)
def test_settings_whose_derived_quantities_leave_float_range_are_refused(kwargs: dict, named: str) -> None:
    with pytest.raises(InvalidParameterError, match=re.escape(named)):
        Setting(**kwargs)


def test_numpy_scalars_are_numbers_but_bools_and_strings_are_not() -> None:
    import numpy as np

    setting = Setting(H=np.float64(5.76e23), C=np.int64(100_000), p=np.float32(0.9))
    assert setting.b == pytest.approx(Setting(H=5.76e23, C=1e5).b)
    for kwargs in ({"H": 1e24, "C": True}, {"H": "1e24", "C": 1e5}, {"H": 1e24, "C": 1e5, "p": np.bool_(True)}):
        with pytest.raises(InvalidParameterError):
            Setting(**kwargs)
