"""`computewatch sampling ...`: Eq. 1, Table 1, detection probabilities, Monte Carlo, figures.

`plan` and `simulate` share one set of defaults: Table 1's a, f, T, T_m and p, the exact form
of Eq. 1 (the integer plan; `table1` alone defaults to the paper's linear form), and a run that
starts at a period's start (the world Appendix B's closed form describes). `simulate` prints
the closed form it is compared with, the windowed form for the same start, and which of the
closed form's simplifications apply to the setting.

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
FormulaOption = Annotated[FormulaName, typer.Option("--formula", help="Eq. 1's form: linear (the paper's Table 1) or exact (the integer plan that reaches p).")]
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
    formula: FormulaOption = "exact",
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
        from computewatch.analysis.detection import detection_probability_windowed

        console.print(
            f"Detection probability sampling {math.ceil(s):,} chips a period "
            f"(Appendix B, run starting at a period start): {result.detection_probability:.4f}; "
            f"for a run starting anywhere in a period (windowed form): "
            f"{detection_probability_windowed(setting, math.ceil(s)):.4f}"
        )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")


StartOption = Annotated[
    str, typer.Option("--start-offset", metavar="<days|uniform>",
                      help="Days into a period the run starts, in [0, T_m), or uniform (drawn per trial). "
                           "Default 0: a period's start, as Appendix B's closed form and `plan` assume.")
]


def _offset(text: str, as_json: bool) -> float | None:
    if text.strip().lower() == "uniform":
        return None
    try:
        return float(text)
    except ValueError:
        fail(f"--start-offset {text!r}: give a number of days in [0, T_m) or 'uniform'", as_json=as_json)


@app.command("simulate", cls=Command)
def simulate(
    flops: FlopsOption,
    chips: ChipsOption,
    samples: Annotated[
        int | None, typer.Option("--samples", min=0, help="s: chips sampled per period, 0..C (default: Eq. 1 in --formula's form, as `plan` gives it).")
    ] = None,
    trials: Annotated[
        int, typer.Option("--trials", min=1, max=MAX_TRIALS,
                          help="Number of simulated runs (about 0.1-0.7 million a second, more where few sampled chips are run chips).")
    ] = 10_000,
    strategy: Annotated[StrategyName, typer.Option("--strategy", help="The Prover's run shape (Appendix C).")] = "minimum",
    factor: Annotated[float, typer.Option("--factor", help="k >= 1 for fewer-longer / more-shorter.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed.")] = 0,
    start_offset: StartOption = "0",
    chip_flops_per_day: ChipFlopsOption = H100_FLOPS_PER_DAY,
    snapshots_per_day: SnapshotsOption = _DEFAULTS.f,
    run_days: RunDaysOption = _DEFAULTS.T,
    period_days: PeriodOption = _DEFAULTS.T_m,
    probability: ProbabilityOption = _DEFAULTS.p,
    formula: FormulaOption = "exact",
    as_json: JsonOption = False,
) -> None:
    """Monte Carlo estimate of a plan's detection probability, printed beside Appendix B's closed
    form (what `plan` reports) and the windowed form, with the reasons they may differ here."""
    from computewatch.analysis.detection import detection_probability_windowed

    setting = _setting(flops, chips, chip_flops_per_day, snapshots_per_day, run_days, period_days, probability, as_json)
    offset = _offset(start_offset, as_json)
    try:
        s = _default_samples(setting, formula) if samples is None else samples
        with progress("simulating", trials) as update:
            result = run_simulation(
                setting, s, trials, strategy=strategy, k=factor, seed=seed, offset=offset, progress=update,
            )
        windowed = detection_probability_windowed(setting, s, strategy, factor, offset)
    except AnalysisError as error:
        fail(str(error), as_json=as_json)
    if as_json:
        _echo_json({**result.to_json(), "samples": s, "start_offset": offset, "windowed": windowed})
        return
    console = Console()
    start = ("uniform starts" if offset is None else "runs starting at a period's start" if offset == 0
             else f"runs starting {offset:g} days into a period")
    console.print(
        f"{result.detected:,} of {result.trials:,} runs detected with s = {s:,} ({start}): "
        f"{result.estimate:.4f} (95% CI {result.ci95[0]:.4f}-{result.ci95[1]:.4f})."
    )
    console.print(f"Appendix B closed form (what `sampling plan` reports): {result.closed_form:.4f}; "
                  f"windowed form for the same start: {windowed:.4f}.")
    for reason in _why_they_differ(setting, s, offset, strategy):
        console.print(f"  - {escape(reason)}")


def _default_samples(setting: Setting, formula: str) -> int:
    """`plan`'s integer plan for the formula (linear: its s rounded up)."""
    if formula == "exact":
        return samples_exact(setting)
    result = make_plan(setting, "linear")
    if result.samples_per_period is None:
        raise AnalysisError(result.reason or "Eq. 1 has no answer for this setting")
    return math.ceil(result.samples_per_period)


def _why_they_differ(setting: Setting, s: int, offset: float | None, strategy: str) -> list[str]:
    """The closed form's simplifications that apply to this setting (docs/analysis.md)."""
    reasons = []
    if offset is None or offset > 0:
        reasons.append("the run starts inside a period, so the inspection after its end sees it too: Appendix B, "
                       "which assumes a start at a period's start, is conservative here (the windowed form is not)")
    days = setting.T if strategy == "minimum" else None
    if days is not None and abs(days / setting.T_m - round(days / setting.T_m)) > 1e-9:
        reasons.append("T is not a multiple of T_m: Appendix B counts ceil(T/T_m) full inspection rounds, "
                       "so it can be optimistic (the windowed form counts each round's share)")
    if s > 0.1 * setting.C:
        reasons.append("s is over a tenth of C: inspections draw distinct chips, which both closed forms (independent "
                       "draws) undercount, so they are conservative")
    if not reasons:
        reasons.append("this setting meets Appendix B's assumptions: the estimate differs from it by sampling noise only "
                       "(see the 95% CI)")
    return reasons


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
