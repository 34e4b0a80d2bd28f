"""`computewatch sampling ...`: the JSON contracts other tools rely on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computewatch.analysis import Setting, samples_exact
from computewatch.cli import app

runner = CliRunner()


def _json(args: list[str], exit_code: int = 0) -> object:
    result = runner.invoke(app, ["sampling", *args])
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)


def test_table1_json_contract() -> None:
    rows = _json(["table1", "--json"])
    assert [row["model"] for row in rows] == [
        "GPT-3", "Chinchilla", "PaLM", "Chinchilla-280B", "Chinchilla-1T", "Chinchilla-10T",
    ]
    for row in rows:
        assert set(row) == {"model", "flops", "h100_days", "h100s_for_one_year", "samples_per_year"}
        assert set(row["samples_per_year"]) == {"1000", "100000", "10000000"}
    gpt3, chinchilla_1t, chinchilla_10t = rows[0], rows[4], rows[5]
    assert math.floor(gpt3["samples_per_year"]["1000"]) == 243
    assert gpt3["samples_per_year"]["1000"] != 243  # unrounded
    assert chinchilla_1t["samples_per_year"]["1000"] is None
    assert chinchilla_10t["samples_per_year"]["100000"] is None
    assert math.floor(rows[3]["samples_per_year"]["1000"]) == 7  # the paper's 7, linear form
    exact = _json(["table1", "--json", "--formula", "exact"])
    assert exact[3]["samples_per_year"]["1000"] is None  # b = 3.8: impossible, null
    assert round(exact[0]["samples_per_year"]["1000"]) == 229


def test_table1_rich_output() -> None:
    result = runner.invoke(app, ["sampling", "table1"])
    assert result.exit_code == 0
    assert "Chinchilla-10T" in result.stdout and "—" in result.stdout and "2.43e6" in result.stdout


def test_plan_json_contract() -> None:
    out = _json(["plan", "--flops", "5.76e23", "--chips", "1e5", "--formula", "exact", "--json"])
    assert set(out) == {"samples_per_period", "samples_per_year", "detection_probability", "feasible", "reason", "warnings"}
    assert out["feasible"] is True and out["reason"] is None and out["warnings"] == []
    assert out["samples_per_period"] == samples_exact(Setting(H=5.76e23, C=1e5))
    assert out["samples_per_year"] == pytest.approx(out["samples_per_period"] * 365 / 30)
    assert out["detection_probability"] >= 0.9
    infeasible = _json(["plan", "--flops", "9.9e24", "--chips", "1000", "--json", "--formula", "exact"], exit_code=1)
    assert infeasible["feasible"] is False and infeasible["samples_per_period"] is None
    assert ">= 1" in infeasible["reason"]
    custom = _json([
        "plan", "--flops", "1e24", "--chips", "1e5", "--chip-flops-per-day", "1e20", "--snapshots-per-day", "1",
        "--run-days", "60", "--period-days", "20", "--probability", "0.5", "--formula", "linear", "--json",
    ])
    b = 1e24 / (1e20 * 60 * 1e5)
    assert custom["samples_per_period"] == pytest.approx(-math.log(0.5) / (b * (1 - math.exp(-20))) * 20 / 60)


def test_plan_refuses_invalid_parameters_with_a_clear_message() -> None:
    result = runner.invoke(app, ["sampling", "plan", "--flops", "1e24", "--chips", "1e5", "--probability", "1.5"])
    assert result.exit_code == 2
    assert "p must lie strictly between 0 and 1" in result.output
    result = runner.invoke(app, ["sampling", "plan", "--flops", "1e24", "--chips", "-3"])
    assert result.exit_code == 2 and "C must be a positive" in result.output
    for args, named in (
        (["--flops", "nan", "--chips", "1e5"], "H must be a positive finite"),
        (["--flops", "1e24", "--chips", "1e5", "--probability", "nan"], "p must lie strictly"),
        (["--flops", "1e-300", "--chips", "1e300"], "b = H/(a*T*C)"),  # underflows to 0
        (["--flops", "1e24", "--chips", "1e5", "--snapshots-per-day", "1e-320", "--formula", "exact"], "Eq. 1"),
        (["--flops", "1e24", "--chips", "1e5", "--run-days", "1e-320", "--json"], "b = H/(a*T*C)"),
    ):
        result = runner.invoke(app, ["sampling", "plan", *args])
        assert result.exit_code == 2, result.output
        assert named in " ".join(result.output.split())
        assert isinstance(result.exception, SystemExit)  # a clean exit, not a traceback


def test_simulate_refuses_invalid_parameters_with_a_clear_message() -> None:
    base = ["sampling", "simulate", "--flops", "5.76e23", "--trials", "10"]
    for args, named in (
        (["--chips", "1e10", "--samples", "100"], "below 1e+09 chips"),
        (["--chips", "1e5", "--start-offset", "nan"], "start offset"),
        (["--chips", "1e5", "--strategy", "fewer-longer", "--factor", "inf"], "strategy factor k"),
        (["--chips", "1e5", "--samples", "-1"], "--samples"),
        (["--chips", "1e5", "--samples", "10", "--trials", "0"], "trials"),
    ):
        result = runner.invoke(app, [*base[:-2], *args, *([] if "--trials" in args else base[-2:])])
        assert result.exit_code == 2, result.output
        assert named in " ".join(result.output.split())
        assert isinstance(result.exception, SystemExit)


def test_simulate_json_contract() -> None:
    out = _json([
        "simulate", "--flops", "5.76e23", "--chips", "1e7", "--samples", "109045", "--trials", "20000",
        "--seed", "3", "--json",
    ])
    assert set(out) == {"trials", "detected", "estimate", "ci95", "closed_form", "samples", "start_offset", "windowed"}
    assert out["samples"] == 109045 and out["start_offset"] == 0.0
    assert out["trials"] == 20000 and out["estimate"] == out["detected"] / 20000
    lo, hi = out["ci95"]
    assert lo <= out["estimate"] <= hi
    assert abs(out["closed_form"] - 0.9) < 1e-4
    again = _json([
        "simulate", "--flops", "5.76e23", "--chips", "1e7", "--samples", "109045", "--trials", "20000",
        "--seed", "3", "--json",
    ])
    assert again == out
    longer = _json([
        "simulate", "--flops", "5.76e23", "--chips", "1e5", "--trials", "2000", "--strategy", "fewer-longer",
        "--factor", "3", "--json",
    ])
    assert 0 < longer["closed_form"] < 1


def test_simulate_rejects_a_strategy_that_needs_more_chips_than_exist() -> None:
    result = runner.invoke(app, [
        "sampling", "simulate", "--flops", "9.9e24", "--chips", "1e4", "--samples", "5", "--trials", "10",
        "--strategy", "more-shorter", "--factor", "10",
    ])
    assert result.exit_code == 2 and "times the stockpile" in result.output


def test_figures_from_the_command_line(tmp_path: Path) -> None:
    fig2 = tmp_path / "fig2.png"
    assert runner.invoke(app, ["sampling", "figure2", "--out", str(fig2)]).exit_code == 0
    curve = tmp_path / "curve.png"
    result = runner.invoke(app, ["sampling", "detection-plot", "--flops", "2.56e24", "--chips", "1e5", "--out", str(curve)])
    assert result.exit_code == 0, result.output
    assert fig2.read_bytes()[:4] == curve.read_bytes()[:4] == b"\x89PNG"


def test_plan_and_simulate_share_their_defaults() -> None:
    """Without options, simulate samples what plan says and compares with the number plan prints;
    a run starting at a period's start is the world both describe, so the estimate agrees."""
    args = ["--flops", "5.76e23", "--chips", "1e5"]
    planned = _json(["plan", *args, "--json"])
    simulated = _json(["simulate", *args, "--trials", "20000", "--seed", "5", "--json"])
    assert simulated["samples"] == math.ceil(planned["samples_per_period"])
    assert simulated["closed_form"] == pytest.approx(planned["detection_probability"], rel=1e-12)
    lo, hi = simulated["ci95"]
    assert lo <= planned["detection_probability"] <= hi
    linear = _json(["plan", *args, "--formula", "linear", "--json"])
    assert _json(["simulate", *args, "--formula", "linear", "--trials", "100", "--json"])["samples"] == math.ceil(
        linear["samples_per_period"])
    uniform = _json(["simulate", *args, "--trials", "20000", "--seed", "5", "--start-offset", "uniform", "--json"])
    assert uniform["start_offset"] is None and uniform["ci95"][0] > uniform["closed_form"]  # conservative closed form


def test_simulate_says_what_it_compares_with_and_why_they_differ() -> None:
    base = ["sampling", "simulate", "--flops", "5.76e23", "--chips", "1e5", "--trials", "2000"]
    aligned = " ".join(runner.invoke(app, base, env={"COLUMNS": "200"}).stdout.split())
    assert "Appendix B closed form (what `sampling plan` reports): 0.9001" in aligned
    assert "sampling noise only" in aligned and "conservative" not in aligned
    uniform = " ".join(runner.invoke(app, [*base, "--start-offset", "uniform"], env={"COLUMNS": "200"}).stdout.split())
    assert "starts inside a period" in uniform and "windowed form for the same start: 0.97" in uniform
    longer = " ".join(runner.invoke(app, [*base, "--run-days", "31"], env={"COLUMNS": "200"}).stdout.split())
    assert "T is not a multiple of T_m" in longer
    bad = runner.invoke(app, [*base, "--start-offset", "soon"])
    assert bad.exit_code == 2 and "--start-offset 'soon'" in " ".join(bad.output.split())
