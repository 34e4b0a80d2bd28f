"""Chip-log attacks (paper §4, §3.1, footnote 11): each tampering is caught at the inspection by
the named check; a backup restored with no tree head witnessed in between is the documented gap."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computewatch.adversary.suite import Context, get_attack, run_attack

CAUGHT = {
    "log-flipped-byte": "inspection.log",
    "log-truncated": "inspection.log",
    "log-dropped-entry": "inspection.log",
    "log-spliced": "inspection.log",
    "log-restored-backup": "inspection.witness",
    "firmware-unsigned": "inspection.boot",
    "firmware-rollback": "inspection.boot",
    "firmware-late-update": "inspection.log",
}


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    with Context() as c:
        yield c


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_chip_log_attack_is_caught_by_its_check(ctx: Context, name: str) -> None:
    trials = 2 if name == "log-restored-backup" else 1  # both ways the witness learns a head
    result = run_attack(name, trials, seed=3, context=ctx)
    assert result.detected_by == CAUGHT[name] == get_attack(name).expected, result.to_json()
    assert result.detected and result.ok and result.detection_rate == 1.0 and result.trials == trials
    assert CAUGHT[name] in result.checks and result.detail


def test_firmware_attacks_are_refused_by_the_chip_before_the_inspection(ctx: Context) -> None:
    for name in ("firmware-unsigned", "firmware-rollback"):
        assert "chip.verified-boot" in run_attack(name, 1, context=ctx).checks


def test_late_update_is_named_as_unmonitored_compute(ctx: Context) -> None:
    assert "unmonitored compute" in run_attack("firmware-late-update", 1, context=ctx).detail


def test_backup_restored_without_a_witnessed_head_is_the_documented_gap(ctx: Context) -> None:
    result = run_attack("log-restored-unwitnessed", 1, context=ctx)
    assert get_attack("log-restored-unwitnessed").kind == "gap" and "remote attestation" in get_attack("log-restored-unwitnessed").why
    assert not result.detected and result.detection_rate == 0.0 and result.detected_by is None
    assert result.ok  # the measurement matches the documented limit
