"""Figures of a verdict document (docs/report.md): PNG bytes or SVG text, one per figure.

Each figure reads only the verdict JSON (docs VERDICT contract), tolerates missing fields and
empty series (an inconclusive verdict still gets every figure, saying "no data"), and never
interprets labels as mathtext: run ids and chip serials are the Prover's strings.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: no display in CI or on servers

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from computewatch.crypto.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = [
    "FIGURES",
    "figure",
    "figures",
    "save_figures",
]

_PASS, _FAIL, _NONE = "#2e7d32", "#c62828", "#9e9e9e"
_LABEL_MAX = 24
_MAX_LEGEND_RUNS = 8
# text.parse_math off: a '$' in a run id must not be read as mathtext (nor crash the draw).
_RC: dict[RcKeyType, Any] = {"text.parse_math": False, "svg.hashsalt": "computewatch", "svg.fonttype": "path"}


def _dict(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        return None
    try:  # large integers travel as strings in some documents
        v = float(x)
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def _points(series: Any, width: int = 2) -> list[tuple[float, ...]]:
    """Rows of `width` finite numbers; malformed rows are skipped."""
    rows = []
    for row in _list(series):
        if isinstance(row, (list, tuple)) and len(row) >= width:
            vals = [v for v in map(_num, row[:width]) if v is not None]
            if len(vals) == width:
                rows.append(tuple(vals))
    return rows


def _short(label: Any) -> str:
    text = " ".join(str(label).split())
    return text if len(text) <= _LABEL_MAX else text[: _LABEL_MAX - 1] + "…"


def _runs(verdict: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in _list(_dict(verdict).get("runs")) if isinstance(r, Mapping)]


def _series(run: Mapping[str, Any], key: str, width: int = 2) -> list[tuple[float, ...]]:
    return _points(_dict(run.get("series")).get(key), width)


def _empty(ax: Any, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#616161")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: Any, **kwargs: Any) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles or kwargs.get("handles"):
        ax.legend(fontsize=8, **kwargs)


def _new(title: str, xlabel: str, ylabel: str, height: float = 3.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(7.2, height))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _render(fig: Figure, fmt: str) -> bytes | str:
    buf = io.BytesIO()
    if fmt == "png":
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        return buf.getvalue()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    return buf.getvalue().decode("utf-8")


def _build(draw: Callable[[Mapping[str, Any]], Figure], verdict: Mapping[str, Any], fmt: str) -> bytes | str:
    if fmt not in ("png", "svg"):
        raise ValueError(f"figure format must be 'png' or 'svg', got {fmt!r}")
    with matplotlib.rc_context(_RC):
        return _render(draw(_dict(verdict)), fmt)


def _log_if_wide(ax: Any, values: list[float]) -> None:
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) > 100:
        ax.set_yscale("log")


def _two_series(
    title: str, ylabel: str, keys: tuple[str, str], draw: Callable[..., None]
) -> Callable[[Mapping[str, Any]], Figure]:
    """A figure with two step series per run (e.g. recorded and replayed); `draw(ax, name, a, b)`."""

    def build(verdict: Mapping[str, Any]) -> Figure:
        fig, ax = _new(title, "step", ylabel)
        drawn = False
        for i, run in enumerate(_runs(verdict)):
            first, second = _series(run, keys[0]), _series(run, keys[1])
            name = _short(run.get("run_id", f"run {i}")) if i < _MAX_LEGEND_RUNS else None
            draw(ax, name, first, second)
            drawn = drawn or bool(first or second)
        if not drawn:
            _empty(ax)
        _legend(ax)
        return fig

    return build


def _xs(rows: list[tuple[float, ...]], col: int = 0) -> list[float]:
    return [r[col] for r in rows]


def _loss_lines(ax: Any, name: str | None, recorded: list[Any], replayed: list[Any]) -> None:
    color = None
    if recorded:
        (line,) = ax.plot(_xs(recorded), _xs(recorded, 1), lw=1.2, label=name and f"{name} recorded")
        color = line.get_color()
    if replayed:
        ax.scatter(_xs(replayed), _xs(replayed, 1), marker="x", s=28, color=color or _PASS, zorder=3,
                   label=name and f"{name} replayed")


def _lr_lines(ax: Any, name: str | None, recorded: list[Any], expected: list[Any]) -> None:
    if expected:
        ax.plot(_xs(expected), _xs(expected, 1), color="#616161", lw=2.5, alpha=0.5, label=name and f"{name} schedule")
    if recorded:
        ax.plot(_xs(recorded), _xs(recorded, 1), lw=1.0, label=name and f"{name} recorded")


_draw_loss = _two_series("Training loss: recorded vs replayed", "loss", ("loss", "replayed_loss"), _loss_lines)
_draw_lr = _two_series(
    "Learning rate: recorded vs precommitted schedule", "learning rate", ("lr", "expected_lr"), _lr_lines
)


def _draw_update_norms(verdict: Mapping[str, Any]) -> Figure:
    fig, ax = _new("Update norm per checkpoint pair", "step (end of the pair)", "L2 norm of W[to] - W[from]")
    values: list[float] = []
    for i, run in enumerate(_runs(verdict)):
        rows = _series(run, "update_norms", 3)
        if rows:
            ax.plot([r[1] for r in rows], [r[2] for r in rows], marker="o", ms=3, lw=1,
                    label=_short(run.get("run_id", f"run {i}")) if i < _MAX_LEGEND_RUNS else None)
            values += [r[2] for r in rows]
    if not values:
        _empty(ax)
    else:
        _log_if_wide(ax, values)
    _legend(ax)
    return fig


def _draw_segments(verdict: Mapping[str, Any]) -> Figure:
    runs = _runs(verdict)
    fig, ax = _new("Segments: replayed and checked", "step", "run", height=max(2.4, 1.2 + 0.45 * len(runs)))
    ax.grid(alpha=0.3, axis="x")
    drawn = False
    for i, run in enumerate(runs):
        for seg in _list(run.get("segments")):
            seg = _dict(seg)
            lo, hi = _num(seg.get("from")), _num(seg.get("to"))
            if lo is None or hi is None:
                continue
            passed = seg.get("passed")
            color = _PASS if passed is True else _FAIL if passed is False else _NONE
            ax.barh(i, max(hi - lo, 0.5), left=lo, height=0.6, color=color, edgecolor="white", linewidth=0.5)
            drawn = True
    if not drawn:
        _empty(ax)
        return fig
    ax.set_yticks(range(len(runs)), [_short(r.get("run_id", f"run {i}")) for i, r in enumerate(runs)])
    ax.invert_yaxis()
    handles = [Patch(color=_PASS, label="passed"), Patch(color=_FAIL, label="failed"), Patch(color=_NONE, label="not replayed / undecided")]
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    return fig


def _draw_snapshots(verdict: Mapping[str, Any]) -> Figure:
    chips: dict[str, int] = {}
    points: list[tuple[float, int, bool]] = []
    stepless = 0
    for run in _runs(verdict):
        for snap in _list(run.get("snapshots")):
            snap = _dict(snap)
            step = _num(snap.get("step"))
            if step is None:
                stepless += 1
                continue
            row = chips.setdefault(str(snap.get("chip", "?")), len(chips))
            points.append((step, row, snap.get("explained") is True))
    seen = {(str(_dict(s).get("chip", "?")), _num(_dict(s).get("counter"))) for r in _runs(verdict) for s in _list(r.get("snapshots"))}
    for snap in _list(verdict.get("unexplained_snapshots")):  # also those of runs never handed over
        snap = _dict(snap)
        step = _num(snap.get("step"))
        if (str(snap.get("chip", "?")), _num(snap.get("counter"))) in seen:
            continue
        if step is None:
            stepless += 1
            continue
        row = chips.setdefault(str(snap.get("chip", "?")), len(chips))
        points.append((step, row, False))
    title = "Logged snapshots per chip" + (f" ({stepless} without a step not shown)" if stepless else "")
    fig, ax = _new(title, "step the snapshot saw", "chip", height=max(2.4, 1.2 + 0.35 * len(chips)))
    if not points:
        _empty(ax)
        return fig
    for explained, marker, color in ((True, "o", _PASS), (False, "X", _FAIL)):
        sel = [p for p in points if p[2] is explained]
        if sel:
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], marker=marker, color=color, s=36, zorder=3)
    ax.set_yticks(range(len(chips)), [_short(c) for c in chips])
    ax.set_ylim(len(chips) - 0.5, -0.5)  # first chip on top, half a row of margin
    handles = [
        Line2D([], [], marker="o", color=_PASS, ls="", label="explained by a transcript"),
        Line2D([], [], marker="X", color=_FAIL, ls="", label="not explained"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    return fig


def _threshold(verdict: Mapping[str, Any]) -> float | None:
    h = _num(_dict(verdict.get("policy")).get("threshold_flops"))
    return h if h is not None and h > 0 else None


def _draw_compute(verdict: Mapping[str, Any]) -> Figure:
    fig, ax = _new("Compute over time", "step", "cumulative FLOPs")
    values: list[float] = []
    for i, run in enumerate(_runs(verdict)):
        rows = _series(run, "flops_cumulative")
        if rows:
            ax.plot([r[0] for r in rows], [r[1] for r in rows], lw=1.5,
                    label=_short(run.get("run_id", f"run {i}")) if i < _MAX_LEGEND_RUNS else None)
            values += [r[1] for r in rows]
    if not values:
        _empty(ax, "no FLOP count")
        return fig
    h = _threshold(verdict)
    if h is not None:
        ax.axhline(h, color="#ef6c00", ls="--", lw=1, label=f"H = {h:.3g} FLOPs")
        ax.axhline(2 * h, color=_FAIL, ls=":", lw=1, label="2H (detection guaranteed from here)")
        values += [h, 2 * h]
    _log_if_wide(ax, values)
    _legend(ax)
    return fig


_DRAW: dict[str, tuple[str, Callable[[Mapping[str, Any]], Figure]]] = {
    "loss": ("Loss curve", _draw_loss),
    "lr": ("Learning rate", _draw_lr),
    "update_norms": ("Update norms", _draw_update_norms),
    "segments": ("Verified segments", _draw_segments),
    "snapshots": ("Snapshot timeline", _draw_snapshots),
    "compute": ("Compute over time", _draw_compute),
}
FIGURES: dict[str, str] = {name: title for name, (title, _) in _DRAW.items()}  # name -> title, in page order


def figure(verdict: Mapping[str, Any], name: str, *, fmt: str = "png") -> bytes | str:
    """One figure of `FIGURES` as PNG bytes (fmt="png") or SVG text (fmt="svg")."""
    if name not in _DRAW:
        raise ValueError(f"unknown figure {name!r}; figures: {', '.join(_DRAW)}")
    return _build(_DRAW[name][1], verdict, fmt)


def figures(verdict: Mapping[str, Any], *, fmt: str = "png") -> dict[str, bytes | str]:
    """Every figure, in `FIGURES` order."""
    return {name: figure(verdict, name, fmt=fmt) for name in _DRAW}


def save_figures(verdict: Mapping[str, Any], folder: str | Path, *, fmt: str = "png") -> dict[str, Path]:
    """Write every figure as `<folder>/<name>.<fmt>` (atomically); returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, data in figures(verdict, fmt=fmt).items():
        path = folder / f"{name}.{fmt}"
        atomic_write(path, data if isinstance(data, bytes) else data.encode("utf-8"))
        written[name] = path
    return written
