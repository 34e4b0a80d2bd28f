"""`computewatch demo`, the whole chain in one command: the honest Prover is compliant, the one
that hides a run is in violation, and the world it leaves is readable by the other commands.

One demo run (a subprocess, exactly as a user runs it, with a relative --workdir, at the default
size; conftest's `demo_world`) is shared by the tests; its chips' secrets come from a
fixed seed so their snapshot schedules repeat.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from computewatch.cli import app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo(demo_world: dict[str, Any]) -> dict[str, Any]:
    return demo_world


def _db(work: Path) -> str:
    return f"sqlite:///{work / 'registry.db'}"


def _json(*args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    return json.loads(result.stdout)


def test_the_honest_prover_is_compliant_and_the_covert_one_in_violation(demo: dict[str, Any]) -> None:
    doc = demo["doc"]
    assert set(doc) == {"provers", "report"}
    provers = {p["name"]: p for p in doc["provers"]}
    assert [p["name"] for p in doc["provers"]] == ["prover-a", "prover-b"]
    assert all(set(p) == {"name", "verdict", "violations"} for p in doc["provers"])
    assert provers["prover-a"]["verdict"] == "compliant" and provers["prover-a"]["violations"] == []
    b = provers["prover-b"]
    assert b["verdict"] == "violation"
    failed = {v["check"]: v["detail"] for v in b["violations"]}
    # Caught by the covert chip's log: the precommitment and the snapshots of a withheld run.
    assert set(failed) == {"precommitment", "snapshots"}, failed
    assert "whose transcript was not submitted" in failed["precommitment"]
    assert "transcript was withheld" in failed["snapshots"]


def test_the_verdicts_carry_their_evidence(demo: dict[str, Any]) -> None:
    work = demo["work"]
    a = json.loads((work / "verifier" / "verdict-prover-a.json").read_text())
    b = json.loads((work / "verifier" / "verdict-prover-b.json").read_text())
    assert a["snapshots"]["logged"] == a["snapshots"]["explained"] > 0
    assert a["runs"][0]["world_size"] == 4 and len(a["chips"]) == 4 and a["total_flops"] > 0
    assert a["total_flops"] < a["policy"]["threshold_flops"]
    assert a["policy"]["name"] == "demo-policy"
    # B handed over only its decoy: its snapshots are explained, the covert chip's are not.
    assert 0 < b["snapshots"]["explained"] < b["snapshots"]["logged"]
    assert [r["world_size"] for r in b["runs"]] == [1]
    # Every inspected chip's log came from its inspection and audits clean: nothing was tampered with.
    assert all(c["ok"] for c in a["chips"] + b["chips"])


def test_the_html_reports_exist(demo: dict[str, Any]) -> None:
    report = Path(demo["doc"]["report"])
    assert report == demo["work"] / "report.html"
    page = report.read_text()
    assert "prover-a" in page and "compliant" in page and "violation" in page
    assert "verifier/report-prover-a.html" in page and "<script" not in page
    for owner, verdict in (("prover-a", "compliant"), ("prover-b", "violation")):
        full = (demo["work"] / "verifier" / f"report-{owner}.html").read_text()
        assert verdict in full and "Content-Security-Policy" in full


def test_the_world_is_readable_by_the_registry_and_inspect_commands(demo: dict[str, Any]) -> None:
    work = demo["work"]
    db = _db(work)
    holders = sorted(c["holder"] for c in _json("registry", "list", "chips", "--db", db))
    assert holders == ["prover-a"] * 4 + ["prover-b"] * 2
    runs = _json("registry", "list", "runs", "--db", db)
    # A's run and B's decoy are declared; the covert run is not.
    assert sorted(r["owner"] for r in runs) == ["prover-a", "prover-b"]
    queue = _json("registry", "list", "queue", "--status", "unexplained", "--db", db)
    assert queue and {q["owner"] for q in queue} == {"prover-b"} and len({q["serial"] for q in queue}) == 1
    explained = _json("registry", "list", "queue", "--status", "explained", "--db", db)
    assert {q["owner"] for q in explained} == {"prover-a", "prover-b"}
    status = _json("inspect", "status", "1", "--db", db)
    assert status["counts"] == {"clean": 6, "finding": 0, "refused": 0, "pending": 0} and status["revealed"]
    serial = explained[0]["serial"]
    custody = _json("registry", "verify", serial, "--db", db)
    assert custody["ok"] and custody["records"] == 2  # created by the chipmaker, shipped to its owner


def test_the_narrative_goes_to_stderr_with_json(demo: dict[str, Any]) -> None:
    err = demo["stderr"]
    for step in ("1. Supply chain", "3. Prover A trains", "5. Inspectors", "6. The Verifier", "7. Verdicts"):
        assert step in err
    assert "computewatch registry list chips --db" in err and "computewatch verify" in err


def test_a_workdir_that_is_not_empty_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["exit"] == 2 and "not empty" in doc["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["something"]
    target = tmp_path / "something"
    result = CliRunner().invoke(app, ["demo", "--workdir", str(target)])
    assert result.exit_code == 2 and "is a file" in " ".join(result.output.split())


def test_the_embedded_policy_is_the_example_policy() -> None:
    from computewatch.demo.policy import DEMO_POLICY

    assert DEMO_POLICY.encode() == (ROOT / "examples" / "policies" / "demo.toml").read_bytes()


def test_the_violation_is_in_plain_sight(demo: dict[str, Any]) -> None:
    """`inspect status` and B's report lead with what B left unexplained, one snapshot at a time."""
    work = demo["work"]
    b = json.loads((work / "verifier" / "verdict-prover-b.json").read_text())
    missing = b["snapshots"]["logged"] - b["snapshots"]["explained"]
    assert missing > 0 and len(b["unexplained_snapshots"]) == missing
    status = _json("inspect", "status", "--db", _db(work))
    assert status["queue_unexplained"] == missing
    assert [p["owner"] for p in status["provers"]] == ["prover-b", "prover-a"]
    assert status["provers"][0]["state"] == "violation" and status["provers"][1]["state"] == "all explained"
    assert status["findings"][0]["kind"] == "unexplained snapshots" and status["findings"][0]["party"] == "prover-b"
    text = CliRunner().invoke(app, ["inspect", "status", "1", "--db", _db(work)], env={"COLUMNS": "80"}).stdout
    assert text.index("open findings") < text.index("Provers")
    assert "unexplained snapshots: prover-b" in text and "{" not in text and "None" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    page = (work / "verifier" / "report-prover-b.html").read_text()
    section = page[page.index("id=unexplained"):page.index("<h2>checks</h2>")]
    assert f"snapshots not explained ({missing})" in section
    assert len(re.findall(r"<tr class=bad>", section)) == missing


def test_the_plan_note_says_what_catches_a_hidden_run(demo: dict[str, Any]) -> None:
    err = " ".join(demo["stderr"].split())
    assert "every chip is inspected" in err and "precommitment before its first step" in err
    assert "detects with probability" not in err  # the register's wording, which the demo contradicts
    index = (demo["work"] / "report.html").read_text()
    b = json.loads((demo["work"] / "verifier" / "verdict-prover-b.json").read_text())
    assert index.count("<td class=unexplained>") == 2
    assert f"<td class=unexplained>{len(b['unexplained_snapshots'])}</td>" in index
    assert "precommitment before its first step" in index and "revealed: yes" in index
