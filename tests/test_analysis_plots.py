"""Figures and the one-screen showcase of the analysis."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from computewatch.analysis import Setting, simulate
from computewatch.analysis.plots import plot_detection_vs_samples, plot_figure2
from computewatch.analysis.showcase import format_count, showcase

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_are_written_as_png(tmp_path: Path) -> None:
    fig2 = plot_figure2(tmp_path / "sub" / "figure2.png")
    setting = Setting(H=2.56e24, C=1e5)
    curve = plot_detection_vs_samples(setting, tmp_path / "curve.png", monte_carlo=[(100, simulate(setting, 100, 500))])
    for path in (fig2, curve):
        data = path.read_bytes()
        assert data.startswith(_PNG_MAGIC) and len(data) > 10_000


def test_format_count_follows_the_papers_printing() -> None:
    assert format_count(None) == "—"
    assert format_count(29.85) == "29"
    assert format_count(771.9) == "771"
    assert format_count(2433726.16) == "2.43e6"


def test_showcase_prints_and_returns_the_figures(tmp_path: Path) -> None:
    console = Console(record=True, width=100)
    figures = showcase(console, tmp_path)
    text = console.export_text()
    assert "Chinchilla-280B" in text and "232 inspectors" in text and "0.970" in text
    assert figures["footnote5"]["inspectors"] == 232
    assert figures["figure2_worst"]["ratio"] == pytest.approx(0.970, abs=5e-4)
    assert len(figures["table1"]) == 6
    mc = figures["monte_carlo"]
    assert mc["ci95"][0] <= mc["windowed"] + 0.002 and mc["estimate"] > mc["closed_form"]
    for name in ("figure2.png", "detection_vs_samples.png"):
        assert (tmp_path / name).read_bytes().startswith(_PNG_MAGIC)


@pytest.mark.parametrize("s_max", [0, -5, 2.5])
def test_detection_plot_refuses_a_bad_axis(tmp_path: Path, s_max: object) -> None:
    from computewatch.analysis import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="largest s"):
        plot_detection_vs_samples(Setting(H=2.56e24, C=1e5), tmp_path / "x.png", s_max=s_max)  # type: ignore[arg-type]
