"""Footnote 5 (inspectors for a worldwide regime) and collusion (pooled stockpiles)."""

from __future__ import annotations

import pytest

from computewatch.analysis import (
    FOOTNOTE5,
    InvalidParameterError,
    Setting,
    colluding_detection_probability,
    footnote5,
    inspectors_needed,
    per_prover_samples,
    pooled_setting,
    proportional_contributions,
    samples_exact,
)


def test_footnote5_samples_and_inspectors() -> None:
    assert FOOTNOTE5.a == 3 * 8.64e19 and FOOTNOTE5.C == 1e7
    result = footnote5()
    assert result["samples_per_year"] == pytest.approx(231_600, rel=1e-3)  # "about 232,000"
    assert result["inspectors"] == 232
    assert footnote5(formula="exact")["inspectors"] == 232
    # With H = 1e25 the notes find about 229k.
    assert footnote5(FOOTNOTE5.replace(H=1e25))["samples_per_year"] == pytest.approx(229_000, rel=2e-3)
    assert result["inspectors"] < 280  # fewer than the IAEA's active inspectors in 2021


def test_inspectors_needed() -> None:
    assert inspectors_needed(1000) == 1
    assert inspectors_needed(1001) == 2
    assert inspectors_needed(5000, chips_per_inspector=2500) == 2
    with pytest.raises(InvalidParameterError):
        inspectors_needed(-1)
    with pytest.raises(InvalidParameterError):
        inspectors_needed(10, chips_per_inspector=0)


def test_collusion_escapes_per_prover_audits_and_global_sampling_catches_it() -> None:
    run = Setting(H=9.9e24, C=1.0)  # C is replaced by each stockpile below
    stockpiles = [10_000.0] * 2 + [2_000.0] * 20  # 20 Provers too small to do the run alone
    alone = per_prover_samples(run, stockpiles)
    assert alone[2:] == [0] * 20 and alone[0] == samples_exact(run.replace(C=10_000.0))
    lent = proportional_contributions(run, stockpiles)
    assert sum(lent) == pytest.approx(run.chips_needed)
    escaped = colluding_detection_probability(run, stockpiles, lent, alone)
    assert escaped < 0.6  # each Prover's own audit is sized for p = 0.9, yet the pooled run escapes
    world = pooled_setting(run, stockpiles)
    assert world.C == sum(stockpiles)
    s_world = samples_exact(world)
    # The world as one Prover, sampled uniformly: each Prover's share of the samples is its share
    # of the chips, which is what the per-Prover form computes.
    shares = [s_world * C / world.C for C in stockpiles]
    assert colluding_detection_probability(run, stockpiles, lent, shares) >= 0.9


def test_collusion_input_checks() -> None:
    run = Setting(H=9.9e24, C=1.0)
    with pytest.raises(InvalidParameterError, match="cannot train"):
        colluding_detection_probability(run, [1e4, 1e4], [100.0, 100.0], [5, 5])
    with pytest.raises(InvalidParameterError, match="one entry per Prover"):
        colluding_detection_probability(run, [1e4], [100.0, 100.0], [5, 5])
    with pytest.raises(InvalidParameterError):
        pooled_setting(run, [])


def test_collusion_refuses_nan_and_negative_inputs() -> None:
    run = Setting(H=9.9e24, C=1.0)
    with pytest.raises(InvalidParameterError, match="contribution"):
        colluding_detection_probability(run, [1e4, 1e4], [float("nan"), 4000.0], [5, 5])
    with pytest.raises(InvalidParameterError, match="samples per period"):
        colluding_detection_probability(run, [1e4, 1e4], [4000.0, 4000.0], [-1, 5])
    with pytest.raises(InvalidParameterError, match="samples per period"):
        colluding_detection_probability(run, [1e4, 1e4], [4000.0, 4000.0], [float("nan"), 5])
