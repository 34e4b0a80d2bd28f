"""Chip-log attacks (paper §4, §3.1, footnote 11): each tampering is caught at the inspection by
the named check, including a backup restored with no tree head witnessed in between, a root-of-trust
counter the owner tries to lower or reset, and two copies of one chip (chip.rot); no gap is left."""

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
    "log-restored-unwitnessed": "inspection.log",
    "rot-counter-lowered": "inspection.log",
    "rot-counter-reset": "inspection.log",
    "chip-two-copies": "inspection.log",
    "log-rechained-entry": "inspection.log",
    "log-uncovered-tail": "inspection.log",
    "log-checkpoint-replayed": "inspection.log",
}


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    with Context() as c:
        yield c


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_chip_log_attack_is_caught_by_its_check(ctx: Context, name: str) -> None:
    trials = 2 if name in ("log-restored-backup", "chip-two-copies") else 1  # both variants
    result = run_attack(name, trials, seed=3, context=ctx)
    assert result.detected_by == CAUGHT[name] == get_attack(name).expected, result.to_json()
    assert result.detected and result.ok and result.detection_rate == 1.0 and result.trials == trials
    assert CAUGHT[name] in result.checks and result.detail


def test_firmware_attacks_are_refused_by_the_chip_before_the_inspection(ctx: Context) -> None:
    for name in ("firmware-unsigned", "firmware-rollback"):
        assert "chip.verified-boot" in run_attack(name, 1, context=ctx).checks


def test_late_update_is_named_as_unmonitored_compute(ctx: Context) -> None:
    assert "unmonitored compute" in run_attack("firmware-late-update", 1, context=ctx).detail


def test_no_chip_log_attack_is_a_gap_and_the_counter_is_named() -> None:
    from computewatch.adversary.suite import attack_names

    assert [n for n in attack_names() if get_attack(n).family == "chip log" and get_attack(n).kind == "gap"] == []
    assert set(CAUGHT) == {n for n in attack_names() if get_attack(n).family == "chip log"}


def test_restores_and_twins_are_named_by_the_root_of_trust_counter(ctx: Context) -> None:
    for name in ("log-restored-unwitnessed", "rot-counter-reset", "chip-two-copies"):
        assert "root-of-trust counter" in run_attack(name, 1, context=ctx).detail, name
    lowered = run_attack("rot-counter-lowered", 1, context=ctx)
    assert "chip.root-of-trust" in lowered.checks  # the hardware refused to lower the counter
