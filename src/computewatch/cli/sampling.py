"""`computewatch sampling ...`: Eq. 1, Table 1, detection probabilities, Monte Carlo, figures.

JSON output (--json) is a contract other tools rely on; see docs/analysis.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from computewatch.analysis import (
    H100_FLOPS_PER_DAY,
    AnalysisError,
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

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

FormulaOption = Annotated[str, typer.Option("--formula", help="linear (the paper's Table 1) or exact.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
FlopsOption = Annotated[float, typer.Option("--flops", help="H: FLOPs of the run to catch.")]
ChipsOption = Annotated[float, typer.Option("--chips", help="C: chips in the audited stockpile.")]
ChipFlopsOption = Annotated[float, typer.Option("--chip-flops-per-day", help="a: FLOPs per chip per day.")]
SnapshotsOption = Annotated[float, typer.Option("--snapshots-per-day", help="f: snapshots per chip per day.")]
RunDaysOption = Annotated[float, typer.Option("--run-days", help="T: length of the run in days.")]
PeriodOption = Annotated[float, typer.Option("--period-days", help="T_m: monitoring period in days.")]
ProbabilityOption = Annotated[float, typer.Option("--probability", help="p: desired detection probability.")]

_DEFAULTS = Setting(H=1.0, C=1.0)  # Table 1's a, f, T, T_m, p


def _fail(error: Exception) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {error}")
    raise typer.Exit(code=2)


def _setting(H: float, C: float, a: float, f: float, T: float, T_m: float, p: float) -> Setting:
    try:
        return Setting(H=H, C=C, a=a, f=f, T=T, T_m=T_m, p=p)
    except AnalysisError as error:
        _fail(error)


def _echo_json(payload: object) -> None:
    typer.echo(json.dumps(payload, indent=2, allow_nan=False))


@app.command("table1")
def table1(formula: FormulaOption = "linear", as_json: JsonOption = False) -> None:
    """Table 1 of the paper, recomputed (samples per year for C = 10^3, 10^5, 10^7)."""
    from computewatch.analysis.showcase import table1_rich

    try:
        rows = make_table1(formula)
    except AnalysisError as error:
        _fail(error)
    if as_json:
        _echo_json([row.to_json() for row in rows])
    else:
        Console().print(table1_rich(rows, formula))


@app.command("plan")
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
    """Chips to sample per monitoring period (Eq. 1) and the detection probability that buys."""
    setting = _setting(flops, chips, chip_flops_per_day, snapshots_per_day, run_days, period_days, probability)
    try:
        result = make_plan(setting, formula)
    except AnalysisError as error:
        _fail(error)
    if as_json:
        _echo_json(result.to_json())
        return
    console = Console()
    if result.samples_per_period is None:
        console.print(f"[yellow]No sample size answers this setting:[/yellow] {result.reason}")
        return
    console.print(
        f"Sample {result.samples_per_period:,.6g} chips every {setting.T_m:g} days "
        f"({result.samples_per_year:,.6g} a year; {formula} form of Eq. 1)."
    )
    if result.detection_probability is not None:
        console.print(
            f"Detection probability sampling {math.ceil(result.samples_per_period):,} chips a period "
            f"(Appendix B, run starting at a period start): {result.detection_probability:.4f}"
        )
    if not result.feasible:
        console.print(f"[yellow]Infeasible setting:[/yellow] {result.reason}")


@app.command("simulate")
def simulate(
    flops: FlopsOption,
    chips: ChipsOption,
    samples: Annotated[
        int | None, typer.Option("--samples", help="s: chips sampled per period (default: Eq. 1 exact).")
    ] = None,
    trials: Annotated[int, typer.Option("--trials", help="Number of simulated runs.")] = 10_000,
    strategy: Annotated[str, typer.Option("--strategy", help="minimum, fewer-longer or more-shorter.")] = "minimum",
    factor: Annotated[float, typer.Option("--factor", help="k for fewer-longer / more-shorter.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    start_offset: Annotated[
        float | None, typer.Option("--start-offset", help="Days into a period the run starts (default: uniform).")
    ] = None,
    chip_flops_per_day: ChipFlopsOption = H100_FLOPS_PER_DAY,
    snapshots_per_day: SnapshotsOption = _DEFAULTS.f,
    run_days: RunDaysOption = _DEFAULTS.T,
    period_days: PeriodOption = _DEFAULTS.T_m,
    probability: ProbabilityOption = _DEFAULTS.p,
    as_json: JsonOption = False,
) -> None:
    """Monte Carlo estimate of a plan's detection probability, against Appendix B's closed form."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )

    setting = _setting(flops, chips, chip_flops_per_day, snapshots_per_day, run_days, period_days, probability)
    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True, disable=as_json,
    )
    try:
        s = samples_exact(setting) if samples is None else samples
        with progress:
            task = progress.add_task("simulating", total=trials)
            result = run_simulation(
                setting, s, trials, strategy=strategy, k=factor, seed=seed, offset=start_offset,
                progress=lambda done: progress.update(task, completed=done),
            )
    except AnalysisError as error:
        _fail(error)
    if as_json:
        _echo_json(result.to_json())
        return
    Console().print(
        f"{result.detected:,} of {result.trials:,} runs detected with s = {s}: "
        f"{result.estimate:.4f} (95% CI {result.ci95[0]:.4f}-{result.ci95[1]:.4f}); "
        f"Appendix B closed form {result.closed_form:.4f}."
    )


@app.command("figure2")
def figure2(out: Annotated[Path, typer.Option("--out", help="PNG file to write.")]) -> None:
    """Figure 2 (Appendix C.1): p_d(k)/p for fewer chips for longer."""
    from computewatch.analysis.plots import plot_figure2

    Console().print(f"wrote {plot_figure2(out)}")


@app.command("detection-plot")
def detection_plot(
    flops: FlopsOption,
    chips: ChipsOption,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    chip_flops_per_day: ChipFlopsOption = H100_FLOPS_PER_DAY,
    snapshots_per_day: SnapshotsOption = _DEFAULTS.f,
    run_days: RunDaysOption = _DEFAULTS.T,
    period_days: PeriodOption = _DEFAULTS.T_m,
    probability: ProbabilityOption = _DEFAULTS.p,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Right end of the s axis.")] = None,
) -> None:
    """Detection probability against samples per period for one H and C."""
    from computewatch.analysis.plots import plot_detection_vs_samples

    setting = _setting(flops, chips, chip_flops_per_day, snapshots_per_day, run_days, period_days, probability)
    try:
        written = plot_detection_vs_samples(setting, out, s_max=max_samples)
    except AnalysisError as error:
        _fail(error)
    Console().print(f"wrote {written}")
