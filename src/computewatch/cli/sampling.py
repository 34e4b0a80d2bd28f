"""`computewatch sampling ...`: Eq. 1, Table 1, detection probabilities, Monte Carlo, figures.

JSON output (--json) is a contract other tools rely on; see docs/analysis.md. Exit status
follows docs/cli.md: `plan` exits 1 when no plan can be carried out (it still prints its
answer), 2 for unusable options.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from computewatch.analysis import (
    H100_FLOPS_PER_DAY,
    AnalysisError,
    SamplingPlan,
    Setting,
    samples_exact,
)
from computewatch.analysis import (
    plan as make_plan,
)
from computewatch.analysis import (
    simulate as run_simulation,
)
from computewatch.analysis import (
    table1 as make_table1,
)
from computewatch.analysis.montecarlo import MAX_TRIALS
from computewatch.cli._common import (
    EXIT_FINDING,
    FLAG,
    Command,
    Group,
    check_output_file,
    fail,
    progress,
)

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, cls=Group)

FormulaName = Literal["linear", "exact"]
StrategyName = Literal["minimum", "fewer-longer", "more-shorter"]
FormulaOption = Annotated[FormulaName, typer.Option("--formula", help="linear (the paper's Table 1) or exact.")]
JsonOption = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print JSON instead of a table (also on failure).")]
FlopsOption = Annotated[float, typer.Option("--flops", help="H: FLOPs of the run to catch (> 0).")]
ChipsOption = Annotated[float, typer.Option("--chips", help="C: chips in the audited stockpile (> 0).")]
ChipFlopsOption = Annotated[float, typer.Option("--chip-flops-per-day", help="a: FLOPs per chip per day (> 0).")]
SnapshotsOption = Annotated[float, typer.Option("--snapshots-per-day", help="f: snapshots per chip per day (> 0).")]
RunDaysOption = Annotated[float, typer.Option("--run-days", help="T: length of the run in days (> 0).")]
PeriodOption = Annotated[float, typer.Option("--period-days", help="T_m: monitoring period in days (> 0).")]
ProbabilityOption = Annotated[float, typer.Option("--probability", help="p: desired detection probability, in (0, 1).")]
FigureOption = Annotated[Path, typer.Option("--out", help="Image file to write; its extension names the format (.png, .pdf, .svg).")]

_DEFAULTS = Setting(H=1.0, C=1.0)  # Table 1's a, f, T, T_m, p
_FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def _setting(H: float, C: float, a: float, f: float, T: float, T_m: float, p: float, as_json: bool = False) -> Setting:
    try:
        return Setting(H=H, C=C, a=a, f=f, T=T, T_m=T_m, p=p)
    except AnalysisError as error:
        fail(str(error), as_json=as_json)


def _echo_json(payload: object) -> None:
    typer.echo(json.dumps(payload, indent=2, allow_nan=False))


@app.command("table1", cls=Command)
def table1(formula: FormulaOption = "linear", as_json: JsonOption = False) -> None:
    """Table 1 of the paper, recomputed (samples per year for C = 10^3, 10^5, 10^7)."""
    from computewatch.analysis.showcase import table1_rich

    try:
        rows = make_table1(formula)
    except AnalysisError as error:
        fail(str(error), as_json=as_json)
    if as_json:
        _echo_json([row.to_json() for row in rows])
    else:
        Console().print(table1_rich(rows, formula))


@app.command("plan", cls=Command)
def plan(
    flops: FlopsOption,
    chips: ChipsOption,
    chip_flops_per_day: ChipFlopsOption = H100_FLOPS_PER_DAY,
    snapshots_per_day: SnapshotsOption = _DEFAULTS.f,
    run_days: RunDaysOption = _DEFAULTS.T,
    period_days: PeriodOption = _DEFAULTS.T_m,
    probability: ProbabilityOption = _DEFAULTS.p,
    formula: FormulaOption = "linear",
    as_json: JsonOption = False,
) -> None:
    """Chips to sample per monitoring period (Eq. 1) and the detection probability that buys.

    Exit status 1 when no plan can be carried out (the stockpile cannot train the run in T
    days, or the plan samples more chips than the stockpile holds)."""
    setting = _setting(flops, chips, chip_flops_per_day, snapshots_per_day, run_days, period_days, probability, as_json)
    try:
        result = make_plan(setting, formula)
    except AnalysisError as error:
        fail(str(error), as_json=as_json)
    if as_json:
        _echo_json(result.to_json())
    else:
        _print_plan(result, setting, formula)
    if not result.feasible:
        fail(f"infeasible plan: {result.reason}", EXIT_FINDING)


def _print_plan(result: SamplingPlan, setting: Setting, formula: str) -> None:
    console = Console()
    s = result.samples_per_period
    if s is None:
        console.print(f"[yellow]No sample size answers this setting:[/yellow] {escape(result.reason or '')}")
        return
    console.print(
        f"Sample {s:,.6g} chips every {setting.T_m:g} days "
        f"({result.samples_per_year:,.6g} a year; {formula} form of Eq. 1)."
    )
    if result.detection_probability is not None:
        console.print(
            f"Detection probability sampling {math.ceil(s):,} chips a period "
            f"(Appendix B, run starting at a period start): {result.detection_probability:.4f}"
        )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")


@app.command("simulate", cls=Command)
def simulate(
    flops: FlopsOption,
    chips: ChipsOption,
    samples: Annotated[
        int | None, typer.Option("--samples", min=0, help="s: chips sampled per period, 0..C (default: Eq. 1 exact).")
    ] = None,
    trials: Annotated[
        int, typer.Option("--trials", min=1, max=MAX_TRIALS, help="Number of simulated runs (about 3 million a second).")
    ] = 10_000,
    strategy: Annotated[StrategyName, typer.Option("--strategy", help="The Prover's run shape (Appendix C).")] = "minimum",
    factor: Annotated[float, typer.Option("--factor", help="k >= 1 for fewer-longer / more-shorter.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed.")] = 0,
    start_offset: Annotated[
        float | None, typer.Option("--start-offset", help="Days into a period the run starts, in [0, T_m) (default: uniform).")
    ] = None,
    chip_flops_per_day: ChipFlopsOption = H100_FLOPS_PER_DAY,
    snapshots_per_day: SnapshotsOption = _DEFAULTS.f,
    run_days: RunDaysOption = _DEFAULTS.T,
    period_days: PeriodOption = _DEFAULTS.T_m,
    probability: ProbabilityOption = _DEFAULTS.p,
    as_json: JsonOption = False,
) -> None:
    """Monte Carlo estimate of a plan's detection probability, against Appendix B's closed form."""
    setting = _setting(flops, chips, chip_flops_per_day, snapshots_per_day, run_days, period_days, probability, as_json)
    try:
        s = samples_exact(setting) if samples is None else samples
        with progress("simulating", trials) as update:
            result = run_simulation(
                setting, s, trials, strategy=strategy, k=factor, seed=seed, offset=start_offset, progress=update,
            )
    except AnalysisError as error:
        fail(str(error), as_json=as_json)
    if as_json:
        _echo_json(result.to_json())
        return
    Console().print(
        f"{result.detected:,} of {result.trials:,} runs detected with s = {s}: "
        f"{result.estimate:.4f} (95% CI {result.ci95[0]:.4f}-{result.ci95[1]:.4f}); "
        f"Appendix B closed form {result.closed_form:.4f}."
    )


@app.command("figure2", cls=Command)
def figure2(out: FigureOption) -> None:
    """Figure 2 (Appendix C.1): p_d(k)/p for fewer chips for longer."""
    from computewatch.analysis.plots import plot_figure2

    check_output_file(out, suffixes=_FIGURE_SUFFIXES)
    Console().print(f"wrote {plot_figure2(out)}")


@app.command("detection-plot", cls=Command)
def detection_plot(
    flops: FlopsOption,
    chips: ChipsOption,
    out: FigureOption,
    chip_flops_per_day: ChipFlopsOption = H100_FLOPS_PER_DAY,
    snapshots_per_day: SnapshotsOption = _DEFAULTS.f,
    run_days: RunDaysOption = _DEFAULTS.T,
    period_days: PeriodOption = _DEFAULTS.T_m,
    probability: ProbabilityOption = _DEFAULTS.p,
    max_samples: Annotated[int | None, typer.Option("--max-samples", min=1, help="Right end of the s axis.")] = None,
) -> None:
    """Detection probability against samples per period for one H and C."""
    from computewatch.analysis.plots import plot_detection_vs_samples

    setting = _setting(flops, chips, chip_flops_per_day, snapshots_per_day, run_days, period_days, probability)
    check_output_file(out, suffixes=_FIGURE_SUFFIXES)
    try:
        written = plot_detection_vs_samples(setting, out, s_max=max_samples)
    except AnalysisError as error:
        fail(str(error))
    Console().print(f"wrote {written}")
