"""Hiding attacks (§3, §3.1, §6.1, footnote 22): withheld logs, refusals, undeclared chips,
resold, lost and untracked chips are each caught by the register or the Verifier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computewatch.adversary.suite import Context, get_attack, run_attack

CAUGHT = {
    "withhold-log": "inspection.witness",
    "refuse-inspection": "inspection.refused",
    "undeclared-chips": "verifier.snapshots",
    "resell-chip": "inspection.identity",
    "lose-chip": "registry.reported-lost",
    "mass-loss": "registry.investigation",
    "no-custody-trail": "registry.no-custody-trail",
}


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    with Context() as c:
        yield c


@pytest.fixture(scope="module")
def results(ctx: Context) -> dict:
    return {name: run_attack(name, 1, seed=5, context=ctx) for name in CAUGHT}


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_hiding_attack_is_caught_by_its_check(results: dict, name: str) -> None:
    result = results[name]
    assert result.detected_by == CAUGHT[name] == get_attack(name).expected, result.to_json()
    assert result.detected and result.ok and result.detection_rate == 1.0


def test_undeclared_chips_leave_their_snapshots_in_the_explanation_queue(results: dict) -> None:
    result = results["undeclared-chips"]
    assert "transcript was withheld" in result.detail and "queued for explanation" in result.detail


def test_resold_chip_turns_up_flagged_and_the_lost_one_keeps_its_responsible_holder(results: dict) -> None:
    assert "registry.custody-mismatch" in results["resell-chip"].checks
    lost = results["lose-chip"]
    assert "responsible: loser0" in lost.detail and "left the inspection population" in lost.detail
