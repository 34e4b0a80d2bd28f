"""`computewatch attack ...`: the JSON contract, bad input (exit 2) and an attack that is not
caught (exit 1, JSON still printed)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from computewatch.adversary import suite
from computewatch.adversary.suite import (
    Trial,
    attack_names,
    get_attack,
    register,
    result_from_trials,
)
from computewatch.cli import app

runner = CliRunner()
KEYS = {"attack", "paper_ref", "detected", "detected_by", "trials", "detection_rate", "predicted_rate"}


def test_list_names_every_attack_of_the_issue() -> None:
    result = runner.invoke(app, ["attack", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {a["attack"]: a for a in json.loads(result.stdout)}
    assert set(listed) == set(attack_names()) and len(listed) >= 30
    assert {a["family"] for a in listed.values()} == {"chip log", "hiding", "timing", "appendix C", "transcripts", "program claims", "hostile program", "lots", "location", "service",
                                                      "step-challenges"}
    assert all(a["paper_ref"] and a["summary"] and a["kind"] in ("caught", "rate", "gap") for a in listed.values())
    assert all(a["why"] for a in listed.values() if a["kind"] == "gap")
    table = runner.invoke(app, ["attack", "list"])
    assert table.exit_code == 0 and "swap-before-snapshot" in table.stdout


def test_run_json_contract() -> None:
    result = runner.invoke(app, ["attack", "run", "more-chips-shorter", "--trials", "60", "--seed", "4", "--json"])
    assert result.exit_code == 0, result.output
    [doc] = json.loads(result.stdout)
    assert KEYS <= set(doc)
    assert doc["attack"] == "more-chips-shorter" and doc["trials"] == 60 and doc["detected_by"] == "sampling.inspection"
    assert 0.0 < doc["detection_rate"] <= 1.0 and 0.0 < doc["predicted_rate"] < 1.0 and doc["ok"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack", "run", "no-such-attack"], "unknown attack"),
        (["attack", "run"], "exactly one of"),
        (["attack", "run", "collusion", "--all"], "exactly one of"),
        (["attack", "run", "log-truncated", "--trials", "0"], "--trials"),
        (["attack", "run", "log-truncated", "--trials", "21"], "from 1 to 20"),
        (["attack", "run", "--all", "--trials", "-3"], "--trials"),
        (["attack", "run", "collusion", "--seed", "-1"], "--seed"),
    ],
)
def test_unusable_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["exit"] == 2 and message in doc["error"] and "\n" not in doc["error"]


def test_an_attack_that_is_not_caught_exits_1_and_still_prints_json(monkeypatch: pytest.MonkeyPatch) -> None:
    attack_names()  # load the suite first

    def escapes(ctx: suite.Context, trials: int, seed: int) -> suite.AttackResult:
        return result_from_trials(get_attack("test-escapes"), [Trial(False) for _ in range(trials)])

    monkeypatch.setattr(suite, "ATTACKS", dict(suite.ATTACKS))
    register("test-escapes", paper_ref="none", family="test", kind="caught", expected="verifier.init", summary="escapes")(escapes)
    result = runner.invoke(app, ["attack", "run", "test-escapes", "--json"])
    assert result.exit_code == 1, result.output
    [doc] = json.loads(result.stdout)
    assert doc["detected"] is False and doc["detected_by"] is None and doc["ok"] is False


def test_every_attack_of_the_issue_is_in_the_suite() -> None:
    issue = {
        # chip log
        "log-flipped-byte", "log-truncated", "log-dropped-entry", "log-spliced", "log-restored-backup",
        "firmware-unsigned", "firmware-rollback", "firmware-late-update",
        # hiding
        "withhold-log", "refuse-inspection", "undeclared-chips", "resell-chip", "lose-chip", "mass-loss",
        "no-custody-trail",
        # timing and Appendix C
        "swap-before-snapshot", "fewer-chips-longer", "more-chips-shorter", "collusion",
        # transcripts
        "snapshot-is-init", "long-run-as-short-runs", "batches-reordered", "batch-inserted", "batch-removed",
        "hyperparameters-altered", "fang-tiny-lr-drift", "zhang-forged-init", "zhang-straight-line",
        "zhang-optimised-batches", "forged-consistent-chain", "shard-only-spoof", "withheld-transcript",
    }
    assert issue <= set(attack_names())
    rates = {n for n in attack_names() if get_attack(n).kind == "rate"}
    assert rates == {"swap-before-snapshot", "fewer-chips-longer", "more-chips-shorter", "collusion",
                     "step-forgery-0.001", "step-forgery-0.01", "step-forgery-0.1"}
