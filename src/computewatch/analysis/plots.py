"""Figures: Figure 2 (Appendix C.1) and detection probability against samples per period."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display in CI or on servers

import matplotlib.pyplot as plt
import numpy as np

from computewatch.analysis.detection import (
    detection_probability,
    detection_probability_windowed,
)
from computewatch.analysis.errors import InvalidParameterError
from computewatch.analysis.evasion import FIGURE2_P, figure2_grid
from computewatch.analysis.montecarlo import MonteCarloResult
from computewatch.analysis.params import Setting
from computewatch.analysis.sampling import samples_exact, samples_linear

__all__ = ["FIGURE_FORMATS", "check_figure_path", "plot_detection_vs_samples", "plot_figure2"]

_FIGURE2_B_CURVES = (0.01, 0.05, 0.1, 0.15, 0.2)
# Formats the Agg backend writes, named by the file's extension.
FIGURE_FORMATS = (".png", ".pdf", ".svg", ".eps", ".ps", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def check_figure_path(out: Path) -> Path:
    """The figure goes to exactly `out`, in the format its extension names; refuse a name
    without one (matplotlib would append ".png" and write another file than the one named)."""
    out = Path(out)
    if out.suffix.lower() not in FIGURE_FORMATS:
        raise InvalidParameterError(
            f"{out}: name the figure file with its image format as extension ({', '.join(FIGURE_FORMATS[:3])}, ...)"
        )
    return out


def _save(fig: plt.Figure, out: Path) -> Path:
    out = check_figure_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=out.suffix[1:].lower(), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_figure2(out: Path, p: float = FIGURE2_P) -> Path:
    """Figure 2: p_d(k)/p against k for several b, with the 0.95 line the paper's claim uses."""
    check_figure_path(out)
    k, b, ratio = figure2_grid(b=np.array(_FIGURE2_B_CURVES), p=p)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, bi in enumerate(b):
        ax.plot(k, ratio[i], label=f"b = {bi:g}")
    ax.axhline(0.95, color="grey", linestyle="--", linewidth=1, label="0.95 (a 5% drop)")
    ax.set_xlabel("k (the run uses 1/k of the chips for k times as long)")
    ax.set_ylabel("p_d(k) / p")
    ax.set_title(f"Appendix C.1 (Figure 2): fewer chips for longer, p = {p:g}")
    ax.set_xlim(1, k[-1])
    ax.set_ylim(0.94, 1.002)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, out)


def plot_detection_vs_samples(
    setting: Setting,
    out: Path,
    s_max: int | None = None,
    monte_carlo: Sequence[tuple[int, MonteCarloResult]] = (),
) -> Path:
    """Detection probability against samples per period: Appendix B's closed form, the windowed
    form for runs starting anywhere in a period, Eq. 1's two answers, and Monte Carlo points."""
    check_figure_path(out)
    if s_max is not None and (isinstance(s_max, bool) or not isinstance(s_max, (int, np.integer)) or s_max < 1):
        raise InvalidParameterError(f"the largest s to plot must be a whole number >= 1, got {s_max!r}")
    s_exact = samples_exact(setting)
    s_max = s_max or max(4, 3 * s_exact)
    s = np.unique(np.linspace(0, s_max, 120).round().astype(int))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(s, [detection_probability(setting, x) for x in s], label="Appendix B (aligned start)")
    ax.plot(s, [detection_probability_windowed(setting, x) for x in s], label="windowed (uniform start)")
    if monte_carlo:
        xs = [x for x, _ in monte_carlo]
        est = np.array([r.estimate for _, r in monte_carlo])
        lo = np.array([r.ci95[0] for _, r in monte_carlo])
        hi = np.array([r.ci95[1] for _, r in monte_carlo])
        ax.errorbar(xs, est, yerr=[est - lo, hi - est], fmt="o", ms=4, color="black", label="Monte Carlo (95% CI)")
    ax.axhline(setting.p, color="grey", linestyle=":", linewidth=1)
    ax.axvline(s_exact, color="tab:red", linestyle="--", linewidth=1, label=f"Eq. 1 exact: s = {s_exact}")
    ax.axvline(samples_linear(setting), color="tab:purple", linestyle=":", linewidth=1,
               label=f"Eq. 1 linear: s = {samples_linear(setting):.3g}")
    ax.set_xlabel("chips sampled per monitoring period (s)")
    ax.set_ylabel("probability of detecting the run")
    ax.set_title(f"H = {setting.H:.3g} FLOPs, C = {setting.C:.3g} chips, f = {setting.f:g}/day, "
                 f"T = {setting.T:g} d, T_m = {setting.T_m:g} d", fontsize=9)
    ax.set_ylim(0, 1.01)
    ax.set_xlim(0, s_max)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out)
