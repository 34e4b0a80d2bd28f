"""The offline audit names every tampering: flipped bytes, dropped, duplicated, reordered or
spliced entries, forged checkpoints, rewritten history, skipped or invented snapshots."""

from __future__ import annotations

import json
import shutil

import pytest

from computewatch.chip import (
    Chip,
    audit_log,
    verify_attestation,
    verify_chip_certificate,
)
from _chips import booted_chip, leak_boot_key, run_steps
from computewatch.chip.trigger import EpochSchedule
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import b64, entry_signing_input


def _audit(chip: Chip, data: bytes, heads=()):
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    return audit_log(data, cert, chip.chipmaker_root, known_heads=heads)


def _named(report) -> set:
    return {p.entry for p in report.problems}


@pytest.fixture(scope="module")
def closed_chip(tmp_path_factory) -> tuple[Chip, list[bytes]]:
    root = tmp_path_factory.mktemp("audit")
    chip = booted_chip(root, rate=50.0, count=2, checkpoint_every=5)
    chip.log_precommitment(b"\x11" * 32, "run-a")
    chip.log_memory_map({"region.00000": "w", "region.00001": "b", "region.00002": "n"}, "run-a")
    assert run_steps(chip, 24, 1800.0) > 5
    chip.close()
    lines = chip.log_path.read_bytes().split(b"\n")[:-1]
    return chip, lines


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def test_honest_log_audits_clean(closed_chip) -> None:
    chip, lines = closed_chip
    report = _audit(chip, _join(lines))
    assert report.ok, report.problems
    assert report.entries == len(lines)
    assert report.snapshots > 5 and report.epochs_checked >= 1
    kinds = {json.loads(x)["kind"] for x in lines}
    assert {"boot", "schedule-commit", "snapshot", "schedule-reveal", "checkpoint", "shutdown"} <= kinds


def test_every_flipped_byte_names_its_entry(closed_chip) -> None:
    chip, lines = closed_chip
    for i, line in enumerate(lines):
        for pos in (len(line) // 3, len(line) // 2, len(line) - 3):
            bad = list(lines)
            mutated = bytearray(line)
            mutated[pos] ^= 0x01
            bad[i] = bytes(mutated)
            report = _audit(chip, _join(bad))
            assert not report.ok, (i, pos)
            assert i in _named(report), (i, pos, report.problems)


def test_dropped_entry_is_named(closed_chip) -> None:
    chip, lines = closed_chip
    for i in (1, len(lines) // 2, len(lines) - 2):
        report = _audit(chip, _join(lines[:i] + lines[i + 1 :]))
        assert i in _named(report)
        assert any("dropped" in p.problem for p in report.problems if p.entry == i)


def test_duplicated_entry_is_named(closed_chip) -> None:
    chip, lines = closed_chip
    i = len(lines) // 2
    report = _audit(chip, _join([*lines[:i + 1], lines[i], *lines[i + 1:]]))
    assert i + 1 in _named(report)
    assert any("duplicated or reordered" in p.problem for p in report.problems)


def test_reordered_entries_are_named(closed_chip) -> None:
    chip, lines = closed_chip
    i = len(lines) // 2
    swapped = [*lines[:i], lines[i + 1], lines[i], *lines[i + 2:]]
    report = _audit(chip, _join(swapped))
    assert {i, i + 1} <= _named(report)


def test_entry_spliced_from_another_chip_is_named(closed_chip, tmp_path) -> None:
    chip, lines = closed_chip
    other = Chip.open(chip.state_dir.parent / "chip-0001")
    other.boot()
    other.attach([t.clone() for t in chip._tensors or []], tmp_path)
    run_steps(other, 8, 3600.0)
    other.close()
    foreign = other.log_path.read_bytes().split(b"\n")[:-1]
    i = 5
    report = _audit(chip, _join([*lines[:i], foreign[i], *lines[i + 1:]]))
    assert i in _named(report)
    assert any("spliced" in p.problem for p in report.problems if p.entry == i)
    # The other chip's whole log under this chip's certificate fails from the first entry.
    assert 0 in _named(_audit(chip, _join(foreign)))


def _resign(lines: list[bytes], key: SigningKey, start: int, mutate) -> list[bytes]:
    """A forger holding a stolen boot key rewrites entries from `start` on, re-chaining them."""
    import hashlib

    out = list(lines[:start])
    for j, line in enumerate(lines[start:], start):
        e = json.loads(line)
        if j == start:
            mutate(e)
        if out:
            e["prev"] = hashlib.sha256(out[-1]).hexdigest()
        e["sig"] = b64(key.sign(entry_signing_input(e)))
        out.append(canonical_json(e))
    return out


def test_forged_checkpoint_is_named(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=50.0, checkpoint_every=4)
    run_steps(chip, 6, 3600.0)
    key = leak_boot_key(chip)
    chip.checkpoint()
    lines = chip.log_path.read_bytes().split(b"\n")[:-1]
    i = len(lines) - 1

    def wrong_root(e: dict) -> None:
        e["body"]["root"] = "ab" * 32

    report = _audit(chip, _join(_resign(lines, key, i, wrong_root)))
    assert [p.entry for p in report.problems] == [i]
    assert "checkpoint root does not match" in report.problems[0].problem
    # Without the key, changing the root breaks the signature instead.
    e = json.loads(lines[i])
    e["body"]["root"] = "ab" * 32
    report = _audit(chip, _join([*lines[:i], canonical_json(e)]))
    assert any(p.entry == i and "signature" in p.problem for p in report.problems)


def test_clock_going_backwards_is_named_even_when_resigned(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=50.0)
    run_steps(chip, 6, 3600.0)
    key = leak_boot_key(chip)
    lines = chip.log_path.read_bytes().split(b"\n")[:-1]
    i = len(lines) - 1

    def rewind(e: dict) -> None:
        e["clock_ns"] = "1"

    report = _audit(chip, _join(_resign(lines, key, i, rewind)))
    assert any(p.entry == i and "clock went backwards" in p.problem for p in report.problems)


def test_rewritten_history_fails_against_an_earlier_tree_head(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=50.0)
    run_steps(chip, 4, 3600.0)
    # The owner backs up the chip's whole state (a rollback/fork attack) ...
    fork_dir = tmp_path / "fork"
    shutil.copytree(chip.state_dir, fork_dir)
    run_steps(chip, 4, 3600.0, start=4)
    nonce = b"n" * 16
    head = verify_attestation(chip.inspect(nonce), nonce, chip.chipmaker_root)
    chip.close()
    # ... and later restores it to replay a different history.
    fork = Chip.open(fork_dir)
    fork.boot()
    fork.attach([t.clone() for t in chip._tensors or []], tmp_path / "fork-storage")
    run_steps(fork, 30, 3600.0, start=4)
    fork.close()
    data = fork.log_path.read_bytes()
    assert len(fork.log) > head.log_size
    report = _audit(chip, data, heads=[(head.log_size, head.log_root)])
    assert not report.ok
    assert any("does not extend" in p.problem for p in report.problems)
    # A truncated log is caught against the head too.
    full = chip.log_path.read_bytes()
    short = b"".join(x + b"\n" for x in full.split(b"\n")[: head.log_size - 3])
    report = _audit(chip, short, heads=[(head.log_size, head.log_root)])
    assert any("truncated" in p.problem for p in report.problems)
    assert _audit(chip, full, heads=[(head.log_size, head.log_root)]).ok


def test_skipped_snapshot_is_named_at_the_reveal(tmp_path, monkeypatch) -> None:
    real = EpochSchedule.fire_until
    skipped: list[int] = []

    def skip_first(self: EpochSchedule, busy_ns: int) -> list[int]:
        fired = real(self, busy_ns)
        if fired and not skipped:  # firmware that quietly drops one trigger
            skipped.extend(fired)
            return []
        return fired

    monkeypatch.setattr(EpochSchedule, "fire_until", skip_first)
    chip = booted_chip(tmp_path, rate=50.0)
    run_steps(chip, 10, 3600.0)
    chip.close()
    report = chip.audit()
    reveal = next(i for i, x in enumerate(chip.log) if x.kind == "schedule-reveal")
    assert skipped
    assert any(p.entry == reveal and f"busy {skipped[0]} ns has no snapshot" in p.problem for p in report.problems)


def test_invented_trigger_and_wrong_reveal_are_named(tmp_path, monkeypatch) -> None:
    real = EpochSchedule.fire_until

    def invent(self: EpochSchedule, busy_ns: int) -> list[int]:
        fired = real(self, busy_ns)
        return fired if fired else [busy_ns]  # a snapshot at a time of the owner's choosing

    monkeypatch.setattr(EpochSchedule, "fire_until", invent)
    chip = booted_chip(tmp_path, rate=50.0)
    run_steps(chip, 3, 600.0)
    monkeypatch.setattr(EpochSchedule, "reveal", lambda self: b"\x00" * 32)
    chip.close()
    report = chip.audit()
    assert any("does not match the commitment" in p.problem for p in report.problems)

    monkeypatch.setattr(EpochSchedule, "reveal", lambda self: self._seed)
    chip2 = booted_chip(tmp_path / "b", rate=50.0)
    run_steps(chip2, 3, 600.0)
    chip2.close()
    report = chip2.audit()
    snaps = [i for i, x in enumerate(chip2.log) if x.kind == "snapshot"]
    assert any(p.entry in snaps and "not in epoch" in p.problem for p in report.problems)


@pytest.mark.parametrize("field, value", [("clock_ns", "²"), ("busy_ns", "٣"), ("busy_ns", "9" * 5000), ("prev", "00 " * 32)])
def test_hostile_entry_fields_are_named_not_crashes(closed_chip, field, value) -> None:
    from computewatch.chip import ChipError
    from computewatch.chip.log import ChipLog

    chip, lines = closed_chip
    i = 3
    e = json.loads(lines[i])
    e[field] = value
    data = _join([*lines[:i], canonical_json(e), *lines[i + 1:]])
    report = _audit(chip, data)
    assert any(p.entry == i and "malformed entry" in p.problem for p in report.problems), report.problems
    log = chip.state_dir.parent / f"hostile-{field}.log"
    log.write_bytes(data)
    with pytest.raises(ChipError, match=f"entry {i} is malformed"):
        ChipLog.open(log, chip.serial)
    assert log.read_bytes() == data


def test_wiped_log_is_named(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=50.0)
    run_steps(chip, 4, 3600.0)
    chip.close()
    chip.log_path.unlink()  # the owner throws the whole history away
    again = Chip.open(chip.state_dir)
    again.boot()
    again.close()
    report = again.audit()
    assert any(p.entry == 0 and "log wiped" in p.problem for p in report.problems), report.problems


def test_session_cut_from_the_end_is_named(tmp_path) -> None:
    chip = booted_chip(tmp_path, rate=50.0)
    run_steps(chip, 2, 3600.0)
    chip.close()
    after_first = chip.log_path.read_bytes()
    second = Chip.open(chip.state_dir)
    second.boot()
    second.attach(chip._tensors or [], tmp_path / "s2")
    assert run_steps(second, 6, 3600.0) > 0  # snapshots the owner would rather not explain
    second.close()
    chip.log_path.write_bytes(after_first)  # ... so it cuts the whole session off at a clean stop
    third = Chip.open(chip.state_dir)
    third.boot()
    third.close()
    report = third.audit()
    boot3 = len(after_first.split(b"\n")) - 1
    assert third.log[boot3].kind == "boot" and third.log[boot3].boot == 3
    assert any(p.entry == boot3 and "boots in between are missing" in p.problem for p in report.problems)
    assert any("epochs were cut out" in p.problem for p in report.problems)


def test_busy_time_under_firmware_without_logging_is_unmonitored(tmp_path) -> None:
    from computewatch.chip import Chipmaker, FirmwarePolicy

    maker = Chipmaker.create(tmp_path / "maker")
    chip = Chip.open(maker.manufacture(tmp_path / "chip", serial="CW-LEGACY-1"))
    chip.install_firmware(maker.sign_firmware(FirmwarePolicy(logging=False), name="legacy", version="0.9"))
    chip.boot()
    chip.step_boundary(0, 3600.0)
    chip.close()
    report = chip.audit()
    assert any("unmonitored compute" in p.problem for p in report.problems), report.problems
    assert any("disables logging" in w.problem for w in report.warnings)


def test_unpacked_regions_are_named_even_when_resigned(tmp_path) -> None:
    from computewatch.crypto.hashing import Region, shard_digest

    chip = booted_chip(tmp_path, rate=50.0)
    assert run_steps(chip, 3, 3600.0) > 0
    key = leak_boot_key(chip)
    lines = chip.log_path.read_bytes().split(b"\n")[:-1]
    i = next(k for k, x in enumerate(lines) if json.loads(x)["kind"] == "snapshot")

    def gap(e: dict) -> None:
        regions = e["body"]["regions"]
        for r in regions[1:]:
            r["offset"] += 8  # a hole between regions 0 and 1
        e["body"]["shard_digest"] = shard_digest([Region.from_json(r) for r in regions]).hex()

    report = _audit(chip, _join(_resign(lines, key, i, gap)))
    assert any(p.entry == i and "must be packed" in p.problem for p in report.problems), report.problems


def test_malformed_bodies_are_named_even_when_resigned(tmp_path) -> None:
    from computewatch.formats.chip_entry import envelope_to_obj
    from computewatch.formats.firmware import FirmwarePolicy, build_image

    chip = booted_chip(tmp_path, rate=50.0)
    chip.log_precommitment(b"\x22" * 32, "run-b")
    key = leak_boot_key(chip)
    lines = chip.log_path.read_bytes().split(b"\n")[:-1]
    i = len(lines) - 1
    rogue = build_image(SigningKey.generate(), "rogue", "9", 99, b"x", FirmwarePolicy(logging=False))
    cases = {
        "digest": lambda e: e["body"].update(digest="22" * 31),
        "chipmaker root": lambda e: e.update(kind="firmware-staged", body={"firmware": envelope_to_obj(rogue.manifest)}),
    }
    for why, mutate in cases.items():
        report = _audit(chip, _join(_resign(lines, key, i, mutate)))
        assert any(p.entry == i and why in p.problem for p in report.problems), (why, report.problems)
