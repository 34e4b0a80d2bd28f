"""The analysis in one screen, for notebooks and talks: `showcase(console, out_dir)` prints
Table 1, footnote 5, Figure 2's worst case and a Monte Carlo check, writes two figures into
`out_dir` and returns the numbers (docs/analysis.md)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from computewatch.analysis.detection import detection_probability_windowed
from computewatch.analysis.evasion import figure2_worst
from computewatch.analysis.inspectors import footnote5
from computewatch.analysis.montecarlo import simulate
from computewatch.analysis.params import Setting
from computewatch.analysis.plots import plot_detection_vs_samples, plot_figure2
from computewatch.analysis.sampling import samples_exact
from computewatch.analysis.table1 import STOCKPILES, Table1Row, table1

__all__ = ["format_count", "showcase", "table1_rich"]

# The Monte Carlo check: Chinchilla on a 10^7-chip stockpile, runs starting anywhere in a period.
_SHOWCASE_SETTING = Setting(H=5.76e23, C=1e7)
_SHOWCASE_TRIALS = 100_000


def format_count(value: float | None) -> str:
    """A count as Table 1 prints it: "—" for none, below 1000 truncated to an integer (the paper
    prints 29.85 as 29), else 3 significant figures."""
    if value is None:
        return "—"
    return f"{math.floor(value)}" if value < 1000 else _sci(value)


def _sci(value: float) -> str:
    # "2.43e6" rather than "2.43e+06": the paper's style, and narrow enough for 80 columns.
    mantissa, _, exponent = f"{value:.3g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def table1_rich(rows: list[Table1Row], formula: str) -> Table:
    table = Table(title=f"Table 1: samples per year ({formula} form of Eq. 1)")
    table.add_column("Model", no_wrap=True)
    for header in ("H", "H100-days", "H100s/yr"):
        table.add_column(header, justify="right", no_wrap=True)
    for C in STOCKPILES:
        table.add_column(f"C=1e{round(math.log10(C))}", justify="right", no_wrap=True)
    flagged = False
    for row in rows:
        name = row.model.name + (" †" if row.model.projected else "")
        cells = []
        for C in STOCKPILES:
            cell = format_count(row.samples_per_year[C])
            if row.samples_per_year[C] is not None and Setting(H=row.model.H, C=C).infeasibility():
                cell += "*"  # the paper's number for a run these chips cannot finish within T
                flagged = True
            cells.append(cell)
        table.add_row(name, _sci(row.model.H), _sci(row.h100_days), format_count(row.h100s_for_one_year), *cells)
    table.caption = "† projected run.  — the stockpile cannot train the run within a year."
    if flagged:
        table.caption += "\n* b = H/(aTC) >= 1: printed as the paper does; the exact form has no answer."
    return table


def showcase(console: Console, out_dir: Path) -> dict[str, object]:
    """Print the analysis, write figure2.png and detection_vs_samples.png, return the figures."""
    out_dir = Path(out_dir)
    rows = table1("linear")
    console.print(table1_rich(rows, "linear"))
    fn5 = footnote5()
    console.print(
        f"Footnote 5: {fn5['samples_per_year']:,.0f} samples a year worldwide "
        f"-> {fn5['inspectors']} inspectors at 1,000 chips each (IAEA, 2021: 280)."
    )
    worst = figure2_worst()
    console.print(
        f"Figure 2: worst p_d(k)/p = {worst['ratio']:.4f} at b = {worst['b']:g}, k = {worst['k']:g} "
        "(fewer chips for longer gains the Prover under 5%)."
    )
    setting = _SHOWCASE_SETTING
    s = samples_exact(setting)
    mc = simulate(setting, s, _SHOWCASE_TRIALS, seed=2023)
    windowed = detection_probability_windowed(setting, s)
    console.print(
        f"Monte Carlo, Chinchilla at C = 10^7, s = {s}/period, {mc.trials:,} trials: "
        f"{mc.estimate:.4f} (95% CI {mc.ci95[0]:.4f}-{mc.ci95[1]:.4f}); Appendix B closed form "
        f"{mc.closed_form:.4f} (aligned start: conservative), windowed form {windowed:.4f}."
    )
    figure2_png = plot_figure2(out_dir / "figure2.png")
    curve_setting = Setting(H=2.56e24, C=1e5)
    points = [(x, simulate(curve_setting, x, 4000, seed=x)) for x in (50, 150, 250, 400)]
    curve_png = plot_detection_vs_samples(curve_setting, out_dir / "detection_vs_samples.png", monte_carlo=points)
    console.print(f"Figures: {figure2_png}, {curve_png}")
    return {
        "table1": [row.to_json() for row in rows],
        "footnote5": fn5,
        "figure2_worst": worst,
        "monte_carlo": {**mc.to_json(), "samples_per_period": s, "windowed": windowed},
        "figures": [str(figure2_png), str(curve_png)],
    }
