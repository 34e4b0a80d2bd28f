"""Issue 12, the chip: no unearned "ok" from verify-log or verify-attestation, firmware that sees
its log damaged says so in its evidence, messages leak no internal values, and making a chip
is all or nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computewatch.chip import (
    AttestationError,
    Chip,
    ChipError,
    Chipmaker,
    FirmwarePolicy,
    audit_log,
    manufacture_chip,
    provision_chips,
    verify_attestation,
    verify_chip_certificate,
)
from _faults import faulty
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.cli import app
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError

NONCE = bytes(range(16))
runner = CliRunner()


def _run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def maker(tmp_path: Path) -> Chipmaker:
    return Chipmaker.create(tmp_path / "chipmaker")


def _chip(maker: Chipmaker, root: Path, serial: str, sessions: int = 1) -> Chip:
    """A chip that ran `sessions` boots of two training steps, each ended by a clean stop."""
    chip = Chip.open(manufacture_chip(maker, root / serial, maker.sign_firmware(FirmwarePolicy(snapshots_per_day=50.0)), serial=serial))
    for s in range(sessions):
        chip.boot()
        chip.attach(small_shard(), root / f"{serial}-storage")
        run_steps(chip, 2, 3600.0, start=2 * s)
        chip.close()
    return chip


def _attest(chip: Chip) -> bytes:
    chip.boot()
    try:
        return chip.attest(NONCE)
    finally:
        chip.close()


# ---------------------------------------------------------------------------- verify-log
def test_verify_log_needs_a_root_the_verifier_pins(maker: Chipmaker, tmp_path: Path) -> None:
    chip = _chip(maker, tmp_path, "CW-PIN-1")
    r = _run("chip", "verify-log", chip.state_dir)
    assert r.exit_code == 2 and "--chipmaker-pub" in r.stderr and "--trust-chip-copy" in r.stderr
    r = _run("chip", "verify-log", chip.state_dir, "--trust-chip-copy", "--json")
    assert r.exit_code == 0, r.output
    assert any("--trust-chip-copy" in n for n in json.loads(r.stdout)["not_checked"])


def test_an_empty_log_and_a_missing_log_get_the_same_answer(maker: Chipmaker, tmp_path: Path) -> None:
    pub = tmp_path / "chipmaker" / "chipmaker.pub"
    chip = _chip(maker, tmp_path, "CW-EMPTY-1")
    chip.log_path.write_bytes(b"")
    empty = _run("chip", "verify-log", chip.state_dir, "--chipmaker-pub", pub, "--json")
    chip.log_path.unlink()
    missing = _run("chip", "verify-log", chip.state_dir, "--chipmaker-pub", pub, "--json")
    assert empty.exit_code == missing.exit_code == 1
    assert json.loads(empty.stdout)["problems"] == json.loads(missing.stdout)["problems"]
    assert "the log is empty" in json.loads(empty.stdout)["problems"][0]["problem"]


def test_a_log_cut_back_to_an_earlier_boot_is_not_ok(maker: Chipmaker, tmp_path: Path) -> None:
    pub = tmp_path / "chipmaker" / "chipmaker.pub"
    chip = _chip(maker, tmp_path, "CW-CUT-1", sessions=2)
    lines = chip.log_path.read_bytes().split(b"\n")[:-1]
    second_boot = max(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "boot")
    chip.log_path.write_bytes(b"\n".join(lines[: second_boot + 3]) + b"\n")  # mid-session of boot 2
    r = _run("chip", "verify-log", chip.state_dir, "--chipmaker-pub", pub, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["end"] == "open"
    assert "does not end in a checkpoint" in r.stderr


def test_the_audit_says_what_it_could_not_check(maker: Chipmaker, tmp_path: Path) -> None:
    chip = _chip(maker, tmp_path, "CW-NOTE-1")
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    data = chip.log_path.read_bytes()
    alone = audit_log(data, cert, chip.chipmaker_root)
    assert alone.ok and alone.end == "clean-stop" and "no tree head seen earlier" in alone.not_checked[0]
    head = (len(data.split(b"\n")) - 1, bytes.fromhex(alone.root))
    assert audit_log(data, cert, chip.chipmaker_root, known_heads=[head]).not_checked == []


# ---------------------------------------------------------------------------- firmware self-check
def _cut(chip: Chip, keep: int) -> None:
    chip.log_path.write_bytes(b"\n".join(chip.log_path.read_bytes().split(b"\n")[:keep]) + b"\n")


def _edit_first_clock(chip: Chip) -> None:
    lines = chip.log_path.read_bytes().split(b"\n")
    entry = json.loads(lines[1])
    entry["clock_ns"] = str(int(entry["clock_ns"]) + 1)
    lines[1] = canonical_json(entry)
    chip.log_path.write_bytes(b"\n".join(lines))


def _swap_in_first_session(chip: Chip, first: bytes) -> None:
    chip.log_path.write_bytes(first)  # a whole earlier clean stop: the boot counter is ahead of it


@pytest.mark.parametrize(
    "damage, expect",
    [
        (lambda chip, first: _cut(chip, 3), "entries were cut"),
        (lambda chip, first: _edit_first_clock(chip), "edited"),
        (_swap_in_first_session, "entries were cut"),
    ],
    ids=["cut", "edited", "rolled-back-to-an-earlier-stop"],
)
def test_firmware_reports_log_damage_in_its_evidence(maker: Chipmaker, tmp_path: Path, damage, expect: str) -> None:
    chip = _chip(maker, tmp_path, "CW-DMG-1")
    first = chip.log_path.read_bytes()
    chip.boot()
    chip.close()
    damage(chip, first)
    again = Chip.open(chip.state_dir)
    claims = verify_attestation(_attest(again), NONCE, again.chipmaker_root)
    assert claims.tamper and claims.log_damage and expect in " ".join(claims.log_damage)
    # Sticky: the next boot, over a log that now extends sealed state again, still reports it.
    later = Chip.open(chip.state_dir)
    assert verify_attestation(_attest(later), NONCE, later.chipmaker_root).log_damage == claims.log_damage
    # The CLI's verdict on such evidence is a finding, not "ok".
    ev = tmp_path / "ev.json"
    ev.write_bytes(_attest(Chip.open(chip.state_dir)))
    r = _run("chip", "verify-attestation", ev, "--nonce", NONCE.hex(), "--chipmaker-pub", tmp_path / "chipmaker" / "chipmaker.pub")
    assert r.exit_code == 1 and "log damage" in r.stderr and "ok" not in r.stdout.split(":")[0]


def test_a_log_from_another_chip_is_damage_too(maker: Chipmaker, tmp_path: Path) -> None:
    mine, theirs = _chip(maker, tmp_path, "CW-MINE-1"), _chip(maker, tmp_path, "CW-THEIRS-1")
    mine.log_path.write_bytes(theirs.log_path.read_bytes())
    again = Chip.open(mine.state_dir)
    assert any("serial" in d for d in verify_attestation(_attest(again), NONCE, again.chipmaker_root).log_damage)


_KILLED = r"""
import sys
from computewatch.chip import Chip
from computewatch.chip.exercise import small_shard
chip = Chip.open(sys.argv[1])
chip.boot()
chip.attach(small_shard(), sys.argv[2])
for i in range(1000):
    chip.log_precommitment(bytes([i % 256]) * 32, f"run-{i}")
    chip.step_boundary(i, 1800.0)
"""


def test_an_honest_crash_is_never_reported_as_damage(maker: Chipmaker, tmp_path: Path) -> None:
    chip = _chip(maker, tmp_path, "CW-CRASH-1")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for kill_at in (len(chip.log) + 9,):  # mid-append: a torn tail (tests/test_chip_crash.py kills at random too)
        proc = subprocess.run([*faulty(f"kill-append={kill_at}"), "-c", _KILLED, str(chip.state_dir), str(tmp_path / "s")],
                              env=env, timeout=120)
        assert proc.returncode == -signal.SIGKILL
        chip = Chip.open(chip.state_dir)
        chip.boot()
        chip.close()
    assert chip.log_damage == [] and not chip.tamper


# ---------------------------------------------------------------------------- verify-attestation
def test_verify_attestation_pins_the_expected_chip(maker: Chipmaker, tmp_path: Path) -> None:
    a, b = _chip(maker, tmp_path, "CW-A-1"), _chip(maker, tmp_path, "CW-B-1")
    evidence = _attest(b)
    assert verify_attestation(evidence, NONCE, maker.public_key, expected_serial="CW-B-1").serial == "CW-B-1"
    with pytest.raises(AttestationError, match="from chip CW-B-1, not the expected chip CW-A-1"):
        verify_attestation(evidence, NONCE, maker.public_key, expected_serial=a.serial)


def test_a_missing_field_is_not_called_a_signature_failure(maker: Chipmaker, tmp_path: Path) -> None:
    doc = json.loads(_attest(_chip(maker, tmp_path, "CW-FIELD-1")))
    del doc["evidence"]
    with pytest.raises(AttestationError) as info:
        verify_attestation(doc, NONCE, maker.public_key)
    assert "lacks the field(s) 'evidence'" in str(info.value) and "signature" not in str(info.value)


def test_v1_evidence_is_refused(maker: Chipmaker, tmp_path: Path) -> None:
    from _chips import leak_boot_key
    from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope
    from computewatch.formats.chip_entry import PRED_ATTESTATION, envelope_to_obj

    chip = _chip(maker, tmp_path, "CW-V1-1")
    chip.boot()
    doc = json.loads(chip.attest(NONCE))
    statement = json.loads(__import__("base64").b64decode(doc["evidence"]["payload"]))
    statement["predicateType"] = PRED_ATTESTATION
    del statement["predicate"]["log_damage"]
    doc["evidence"] = envelope_to_obj(sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(statement), leak_boot_key(chip)))
    chip.close()
    with pytest.raises(AttestationError, match="predates the firmware's log self-check"):
        verify_attestation(doc, NONCE, maker.public_key)


# ---------------------------------------------------------------------------- messages
def test_audit_messages_leak_no_internal_values(maker: Chipmaker, tmp_path: Path) -> None:
    chip = _chip(maker, tmp_path, "CW-MSG-1")
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    headless = b"\n".join(chip.log_path.read_bytes().split(b"\n")[1:])  # the boot entry is gone
    text = " ".join(p.problem for p in audit_log(headless, cert, chip.chipmaker_root).problems)
    assert "precedes every boot entry" in text
    for leak in ("boot -1", "None/day", "entry None", "NoneType"):
        assert leak not in text
    chip.log_path.write_bytes(b"")
    r = _run("chip", "verify-log", chip.state_dir, "--trust-chip-copy")
    assert "entry None" not in r.output and "log: the log is empty" in " ".join(r.stdout.split())


# ---------------------------------------------------------------------------- making chips
def test_a_bad_option_makes_nothing(tmp_path: Path) -> None:
    r = _run("chip", "manufacture", "--out", tmp_path / "chip", "--serial=")
    assert r.exit_code == 2 and "cannot be empty" in r.stderr
    assert sorted(tmp_path.iterdir()) == []  # no chip, and no chipmaker key made for it
    with pytest.raises(ChipError, match="cannot be empty"):
        Chipmaker.create(tmp_path / "m").manufacture(tmp_path / "c", serial="")


def test_making_a_chip_is_all_or_nothing_and_a_retry_works(maker: Chipmaker, tmp_path: Path) -> None:
    other = Chipmaker.create(tmp_path / "other")
    foreign = other.sign_firmware(FirmwarePolicy())  # installing it is refused half-way
    with pytest.raises(ComputewatchError, match="not signed by the chipmaker root"):
        manufacture_chip(maker, tmp_path / "chip", foreign)
    assert not (tmp_path / "chip").exists() and not list(tmp_path.glob(".chip*"))
    made = manufacture_chip(maker, tmp_path / "chip", maker.sign_firmware(FirmwarePolicy()))
    assert Chip.open(made).serial
    # A crash mid-provisioning leaves a partial folder: the next attempt clears it and goes on.
    (tmp_path / "chips" / ".chip-0001.partial" / "sealed").mkdir(parents=True)
    provision_chips(tmp_path / "chips", 1, chipmaker_dir=tmp_path / "chipmaker")
    provision_chips(tmp_path / "chips", 1, chipmaker_dir=tmp_path / "chipmaker", first_index=1)
    assert sorted(p.name for p in (tmp_path / "chips").iterdir()) == ["chip-0000", "chip-0001"]


def test_rates_and_step_lengths_the_chip_cannot_serve_are_refused(tmp_path: Path) -> None:
    from computewatch.crypto.errors import FormatError

    with pytest.raises(FormatError, match="snapshots_per_day"):
        FirmwarePolicy(snapshots_per_day=1e300)
    with pytest.raises(FormatError):
        provision_chips(tmp_path / "chips", 1, snapshots_per_day=1e300)
    assert not (tmp_path / "chips").exists()  # refused before a key or folder was made
    chip = Chip.open(provision_chips(tmp_path / "ok", 1, snapshots_per_day=50.0)[0])
    chip.boot()
    chip.attach(small_shard(), tmp_path / "storage")
    with pytest.raises(ChipError, match="busy_seconds"):
        chip.step_boundary(0, 1e300)
    chip.close()
