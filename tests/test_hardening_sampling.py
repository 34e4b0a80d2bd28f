"""Issue 12, sampling: a plan is feasible only if it can be carried out, a plan that falls short
of p says so, and the Monte Carlo refuses what it cannot do and shows its progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computewatch.analysis import (
    InvalidParameterError,
    Setting,
    detection_probability,
    plan,
    simulate,
)
from computewatch.analysis.montecarlo import MAX_TRIALS
from computewatch.analysis.plan import samples_to_reach
from computewatch.analysis.plots import plot_figure2
from computewatch.cli import app

runner = CliRunner()


@pytest.mark.parametrize("formula", ["linear", "exact"])
def test_a_plan_sampling_more_chips_than_the_stockpile_is_infeasible(formula: str) -> None:
    result = plan(Setting(H=1e21, C=1e3), formula)  # Eq. 1 asks for ~6,281 of 1,000 chips a period
    assert result.feasible is False and "more than the stockpile" in result.reason
    assert result.detection_probability is None
    # The exact form answers null whenever nothing can be carried out; linear keeps its number.
    assert (result.samples_per_period is None) == (formula == "exact")
    cli = runner.invoke(app, ["sampling", "plan", "--flops", "1e21", "--chips", "1000", "--formula", formula, "--json"])
    assert cli.exit_code == 1 and json.loads(cli.stdout)["feasible"] is False
    assert "infeasible plan" in cli.stderr


def test_the_simulator_and_the_plan_agree_on_what_can_be_done() -> None:
    setting = Setting(H=1e21, C=1e3)
    with pytest.raises(InvalidParameterError, match="whole number in"):
        simulate(setting, 6281, 10)
    assert not plan(setting, "exact").feasible


def test_a_plan_that_falls_short_of_p_warns_and_names_the_samples_that_reach_it() -> None:
    setting = Setting(H=1e24, C=1e5, T=10.0, T_m=30.0)  # the run is a third of a monitoring period
    result = plan(setting, "exact")
    assert result.feasible and result.detection_probability < setting.p
    (warning,) = result.warnings
    needed = samples_to_reach(setting)
    assert f"{needed:,} chips a period reach p" in warning and "shorter than a monitoring period" in warning
    assert detection_probability(setting, needed) >= setting.p > detection_probability(setting, needed - 1)
    cli = runner.invoke(app, ["sampling", "plan", "--flops", "1e24", "--chips", "1e5", "--run-days", "10", "--formula", "exact"])
    assert cli.exit_code == 0 and "warning:" in cli.stdout
    assert plan(Setting(H=1e24, C=1e5), "exact").warnings == ()  # T = T_m: Eq. 1 holds, no warning


def test_the_simulator_refuses_a_negative_seed_and_endless_trials() -> None:
    setting = Setting(H=5.76e23, C=1e5)
    with pytest.raises(InvalidParameterError, match="seed"):
        simulate(setting, 100, 10, seed=-1)
    with pytest.raises(InvalidParameterError, match="at most"):
        simulate(setting, 100, MAX_TRIALS + 1)


def test_progress_shows_when_output_is_not_a_terminal() -> None:
    result = runner.invoke(app, ["sampling", "simulate", "--flops", "5.76e23", "--chips", "1e5", "--trials", "2000", "--json"])
    assert result.exit_code == 0, result.output
    assert "simulating: started (2,000 to do)" in result.stderr
    assert json.loads(result.stdout)["trials"] == 2000  # progress never reaches stdout


def test_a_figure_goes_exactly_where_the_user_said(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="extension"):
        plot_figure2(tmp_path / "figure")  # matplotlib would have written figure.png
    assert list(tmp_path.iterdir()) == []
    written = plot_figure2(tmp_path / "figure.svg")
    assert written == tmp_path / "figure.svg" and written.read_bytes().lstrip().startswith(b"<?xml")
