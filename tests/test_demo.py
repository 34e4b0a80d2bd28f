"""`computewatch demo`, the main job: every step runs and every logged snapshot is explained."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from computewatch.cli import app


def test_demo_explains_every_snapshot_on_every_chip(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--steps", "40", "--preset", "mlp", "--json",
                                        "--chip-secret-seed", "computewatch tests"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["ok"] and summary["log_audit_ok"]
    assert summary["snapshots_logged"] == summary["snapshots_explained"] > 0
    chips = summary["sharded_run"]["chips"]
    assert len(chips) == 2 and all(c["snapshots"] == c["explained"] > 0 and c["log_audit_ok"] for c in chips.values())
    assert (out / "analysis" / "figure2.png").stat().st_size > 10_000
    assert json.loads((out / "transcript-hashes.json").read_text())["precommitment_digest"]
    assert json.loads((out / "summary.json").read_text())["ok"]


def test_demo_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "already holds a demo run" in " ".join(result.output.split())
