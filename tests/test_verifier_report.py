"""The verdict report: self-contained HTML (escaped, figures embedded) and its figures."""

from __future__ import annotations

import base64
import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from computewatch.verifier.plots import FIGURES, figure, figures, save_figures
from computewatch.verifier.report import MAX_TABLE_ROWS, render_html, write_report

_PNG = b"\x89PNG\r\n\x1a\n"
CHECKS = ["chip-logs", "precommitment", "snapshots", "init", "data", "hyperparameters", "segments",
          "memorization", "loss", "compute", "rules"]
EVIL = '<script>alert("x")</script>$\\frac{a}{$ --> & "q"'


def _run(run_id: str, steps: int = 12, k: int = 4, *, failed_segment: int | None = None) -> dict[str, Any]:
    fps = 1_600_000_000
    segments = []
    for lo in range(0, steps, k):
        passed = None if lo == k else (lo != failed_segment)
        segments.append({"from": lo, "to": lo + k, "reasons": ["random"] if lo else ["snapshot", "top-q"],
                         "passed": passed, "distance": None if passed is None else {"l2": 0.0, "relative": 0.0, "cosine": 1.0},
                         "detail": "digest match" if passed else "not replayed" if passed is None else "digest differs"})
    return {
        "run_id": run_id,
        "run_dir": f"/runs/{run_id}",
        "steps": steps,
        "world_size": 1,
        "strategy": "single",
        "checkpoint_every": k,
        "total_flops": fps * steps,
        "flops_per_step": fps,
        "compute": {"busy_seconds": 12.0, "peak_flops_seconds": 0.02, "utilization": 0.4},
        "series": {
            "loss": [[s, 5.5 - 0.2 * s] for s in range(steps)] + [[steps, None]],
            "replayed_loss": [[s, 5.5 - 0.2 * s] for s in range(4)],
            "lr": [[s, 3e-3] for s in range(steps)],
            "expected_lr": [[s, 3e-3] for s in range(steps)],
            "update_norms": [[lo, lo + k, 1.0 / (1 + lo)] for lo in range(0, steps, k)],
            "flops_cumulative": [[s + 1, fps * (s + 1)] for s in range(steps)],
        },
        "segments": segments,
        "snapshots": [
            {"chip": "CW-0001", "counter": 3, "step": 5, "rank": 0, "clock_ns": "5000", "busy_ns": "4000",
             "explained": True, "detail": "matches replay"},
            {"chip": "CW-0002", "counter": 4, "step": 9, "rank": 0, "clock_ns": "9000", "busy_ns": "8000",
             "explained": False, "detail": "no transcript explains it"},
        ],
        "memorization": {"segments": 3, "statistic": 2.5, "p_value": 0.01, "passed": True},
    }


def _verdict(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "verdict": "violation",
        "checks": [{"name": n, "passed": n != "rules", "detail": f"detail of {n}"} for n in CHECKS],
        "total_flops": 2 * 1_600_000_000 * 12,
        "verification_flops": 1_600_000_000 * 4,
        "snapshots": {"logged": 4, "explained": 2},
        "mode": "exact",
        "isolation": "subprocess, no network (unshare)",
        "selection": {"seed_commitment": "ab" * 32, "seed": "cd" * 32, "segments_total": 6, "segments_replayed": 4},
        "tolerance": None,
        "policy": {"name": "demo", "digest": "ef" * 32, "threshold_flops": 2e10},
        "rules": [
            {"id": "report-large", "run_id": "run-a", "kind": "reporting", "applies": True, "outcome": "report",
             "detail": "reporting duty"},
            {"id": "ban-huge", "run_id": "run-b", "kind": "ban", "applies": True, "outcome": "violation",
             "detail": "banned"},
        ],
        "runs": [_run("run-a"), _run("run-b", failed_segment=8)],
    }
    doc.update(overrides)
    return doc


def _inconclusive() -> dict[str, Any]:
    return {
        "verdict": "inconclusive",
        "checks": [{"name": "chip-logs", "passed": None, "detail": "no chip log given"}],
        "total_flops": None,
        "verification_flops": None,
        "snapshots": {"logged": 0, "explained": 0},
        "mode": "exact",
        "isolation": "none",
        "selection": {"seed_commitment": "", "seed": "", "segments_total": 0, "segments_replayed": 0},
        "tolerance": None,
        "policy": None,
        "rules": [],
        "runs": [{"run_id": "r", "series": {}, "segments": [], "snapshots": [], "memorization": None}],
    }


class _Collector(HTMLParser):
    """Collects tags, attributes and text, so tests look at the page the way a browser would."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Collector:
    c = _Collector()
    c.feed(page)
    c.close()
    return c


@pytest.fixture(scope="module")
def figs() -> dict[str, bytes | str]:
    return figures(_verdict())


def test_every_figure_is_a_png(figs: dict[str, bytes | str]) -> None:
    assert list(figs) == list(FIGURES)
    assert set(FIGURES) >= {"loss", "update_norms", "segments", "snapshots", "compute"}
    for name, data in figs.items():
        assert isinstance(data, bytes) and data.startswith(_PNG), name
        assert len(data) > 5_000, name  # a real picture, not an empty canvas


def test_figures_differ_with_their_data(figs: dict[str, bytes | str]) -> None:
    doc = _verdict()
    for run in doc["runs"]:
        for seg in run["segments"]:
            seg["passed"] = False
    assert figure(doc, "segments") != figs["segments"]
    assert figure(doc, "loss") == figs["loss"]  # same data, same picture: rendering is deterministic


def test_compute_figure_draws_h_lines_only_with_a_policy(figs: dict[str, bytes | str]) -> None:
    without = figure(_verdict(policy=None), "compute")
    assert without.startswith(_PNG) and without != figs["compute"]


def test_figures_survive_an_inconclusive_verdict_and_garbage() -> None:
    for doc in (_inconclusive(), {}, {"runs": "not a list"}, {"runs": [{"series": {"loss": [[1], "x", [None, 2]]},
                                                                      "segments": [{"from": "a"}], "snapshots": [7]}]}):
        for name, data in figures(doc).items():
            assert data.startswith(_PNG), name


def test_svg_output_and_bad_names() -> None:
    svg = figure(_verdict(), "snapshots", fmt="svg")
    assert isinstance(svg, str) and "<svg" in svg
    with pytest.raises(ValueError, match="unknown figure"):
        figure(_verdict(), "nope")
    with pytest.raises(ValueError, match="png"):
        figure(_verdict(), "loss", fmt="gif")


def test_mathtext_in_labels_is_not_interpreted() -> None:
    doc = _verdict()
    doc["runs"][0]["run_id"] = r"$\frac{$"  # broken mathtext would raise at draw time if parsed
    doc["runs"][0]["snapshots"][0]["chip"] = r"$\undefinedmacro$"
    for data in figures(doc).values():
        assert data.startswith(_PNG)


def test_save_figures(tmp_path: Path) -> None:
    paths = save_figures(_inconclusive(), tmp_path / "figs")
    assert sorted(p.name for p in paths.values()) == sorted(f"{n}.png" for n in FIGURES)
    assert all(p.read_bytes().startswith(_PNG) for p in paths.values())


def test_page_shows_verdict_checks_rules_runs_and_selection(figs: dict[str, bytes | str]) -> None:
    doc = _verdict()
    page = render_html(doc, figures=figs)
    parsed = _parse(page)
    text = " ".join(parsed.text)
    assert "VIOLATION" in text
    for name in CHECKS:
        assert f"detail of {name}" in text and name in text
    for rule in doc["rules"]:
        assert rule["id"] in text
    for run in doc["runs"]:
        assert run["run_id"] in text and run["run_dir"] in text
    assert doc["selection"]["seed_commitment"] in text and doc["selection"]["seed"] in text
    assert doc["isolation"] in text and doc["policy"]["digest"] in text
    assert "CW-0002" in text and "no transcript explains it" in text and "digest differs" in text
    assert "none: exact mode" in text
    fail_rows = page.count("class=bad")
    assert fail_rows == 1 + 1 + 1 + 2  # rules check, ban rule, failed segment, unexplained snapshot per run


def test_page_shows_tolerance_calibration() -> None:
    tol = {"epsilon": 0.0123, "false_reject_rate": 0.001, "false_accept_rate": 0.0005, "samples": 40}
    text = " ".join(_parse(render_html(_verdict(mode="tolerance", tolerance=tol), figures={})).text)
    assert "0.0123" in text and "0.0005" in text and "40" in text and "none: exact mode" not in text


def test_page_embeds_figures_as_data_uris_and_loads_nothing(figs: dict[str, bytes | str]) -> None:
    page = render_html(_verdict(), figures=figs)
    parsed = _parse(page)
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == len(FIGURES)
    for attrs in images:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(_PNG)
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed"}
    for _, attrs in parsed.tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), key
            assert not (value or "").startswith(("http:", "https:", "//")), value
    assert "Content-Security-Policy" in page


def test_attacker_strings_are_escaped(figs: dict[str, bytes | str]) -> None:
    doc = _verdict()
    doc["runs"][0]["run_id"] = EVIL
    doc["runs"][0]["run_dir"] = EVIL
    doc["runs"][0]["snapshots"][0]["chip"] = EVIL
    doc["runs"][0]["segments"][0]["detail"] = EVIL
    doc["rules"][0]["run_id"] = EVIL
    doc["checks"][0]["detail"] = EVIL
    doc["isolation"] = EVIL
    doc["verdict"] = EVIL
    page = render_html(doc, figures=figs)
    assert "<script" not in page and "alert(" in page
    parsed = _parse(page)
    assert not any(tag == "script" for tag, _ in parsed.tags)
    # The browser's text shows the strings verbatim (escaped in the source, not dropped).
    assert " ".join(parsed.text).count(EVIL) >= 6


def test_inconclusive_verdict_with_empty_series_renders() -> None:
    page = render_html(_inconclusive())
    text = " ".join(_parse(page).text)
    assert "INCONCLUSIVE" in text and "no chip log given" in text and "not decided" in text
    assert "no policy was applied" in text and "no segments" in text
    assert page.count("data:image/png;base64,") == len(FIGURES)


def test_page_survives_a_malformed_document() -> None:
    page = render_html({"verdict": 3, "checks": "x", "runs": [None, 5, {"segments": [None]}], "selection": []}, figures={})
    assert "<html" in page and "3" in page


def test_long_tables_are_cut_with_a_note() -> None:
    doc = _verdict()
    snap = doc["runs"][0]["snapshots"][0]
    doc["runs"][0]["snapshots"] = [dict(snap, counter=i) for i in range(MAX_TABLE_ROWS + 5)]
    page = render_html(doc, figures={})
    assert "5 more row(s)" in page


def test_write_report_is_atomic_and_replaces(tmp_path: Path, figs: dict[str, bytes | str]) -> None:
    out = tmp_path / "sub" / "verdict.html"
    assert write_report(_verdict(), out, figures=figs) == out
    first = out.read_text()
    write_report(_inconclusive(), out, figures={})
    second = out.read_text()
    assert "VIOLATION" in first and "INCONCLUSIVE" in second
    assert [p.name for p in out.parent.iterdir()] == ["verdict.html"]  # no temp file left


def test_render_does_not_mutate_the_verdict() -> None:
    doc = _verdict()
    before = copy.deepcopy(doc)
    render_html(doc, figures={})
    assert doc == before
    assert re.search(r"3\.840e\+10", render_html(doc, figures={}))  # total FLOPs shown


def _withheld(n: int) -> list[dict[str, Any]]:
    """Snapshots a chip logged for a run whose transcript never reached the Verifier."""
    return [{"chip": "CW-HIDDEN", "counter": 10 + i, "step": 3 * i + 1, "run_id": "covert-run", "clock_ns": str(i),
             "busy_ns": str(1000 * i), "detail": "run covert-run's transcript was withheld"} for i in range(n)]


def test_page_lists_every_unexplained_snapshot_before_the_checks() -> None:
    unexplained = [*_withheld(8), {"chip": "CW-0002", "counter": 4, "step": 9, "run_id": "run-a", "clock_ns": "9000", "busy_ns": "8000", "detail": "not reproduced"}]
    page = render_html(_verdict(unexplained_snapshots=unexplained), figures={})
    section = page[page.index("id=unexplained"):page.index("<h2>checks</h2>")]
    assert "snapshots not explained (9)" in section
    rows = re.findall(r"<tr class=bad>(.*?)</tr>", section)
    assert len(rows) == 9
    assert sum("CW-HIDDEN" in r and "covert-run" in r for r in rows) == 8
    assert all(f"<td>{10 + i}</td>" in "".join(rows) for i in range(8))
    clean = render_html(_verdict(unexplained_snapshots=[]), figures={})
    assert "snapshots not explained (0)" in clean and "every logged snapshot was explained" in clean


def test_snapshot_timeline_draws_the_snapshots_of_withheld_runs() -> None:
    import matplotlib

    from computewatch.verifier import plots

    drawn: list[Any] = []
    fig = plots._draw_snapshots(_verdict(unexplained_snapshots=_withheld(8)))
    for ax in fig.axes:
        drawn += [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
    crosses = [c for c in drawn if len(c.get_offsets()) and c.get_facecolor()[0][0] > 0.7]  # red: not explained
    assert sum(len(c.get_offsets()) for c in crosses) == 1 + 1 + 8  # one per run's table, plus the eight withheld
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "CW-HIDDEN" in labels
    assert figure(_verdict(unexplained_snapshots=_withheld(8)), "snapshots") != figure(_verdict(), "snapshots")
