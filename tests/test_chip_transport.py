"""Report-to-server mode: every entry signed and acknowledged before the chip resumes."""

from __future__ import annotations

import pytest

from computewatch.chip import (
    Chip,
    ChipFrozenError,
    FailingTransport,
    InProcessReceiver,
    ReportError,
    SilentTransport,
    audit_log,
    provision_chips,
    verify_chip_certificate,
)
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.chip.transport import expected_ack


def _chip(tmp_path, transport, name="a"):
    (state,) = provision_chips(tmp_path / name, 1, snapshots_per_day=50.0, log_mode="report")
    chip = Chip.open(state, transport=transport)
    return chip


def test_receiver_acks_every_entry_and_its_copy_audits(tmp_path) -> None:
    probe = _chip(tmp_path, None, "probe")
    receiver = InProcessReceiver(probe.chipmaker_root, tmp_path / "receiver")
    chip = Chip.open(probe.state_dir, transport=receiver)
    receiver.register(chip.certificate)
    chip.boot()
    chip.attach(small_shard(), tmp_path / "storage")
    assert run_steps(chip, 12, 3600.0) > 3
    chip.close()
    assert not receiver.rejected
    copy = receiver.log_path(chip.serial).read_bytes()
    assert copy == chip.log_path.read_bytes()
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    assert audit_log(copy, cert, chip.chipmaker_root).ok


def test_report_firmware_needs_a_transport(tmp_path) -> None:
    from computewatch.chip import BootError

    with pytest.raises(BootError, match="transport"):
        _chip(tmp_path, None).boot()


@pytest.mark.parametrize("transport", [SilentTransport(), FailingTransport()])
def test_no_ack_keeps_the_chip_frozen(tmp_path, transport) -> None:
    chip = _chip(tmp_path, transport)
    with pytest.raises(ReportError):
        chip.boot()
    assert chip.frozen
    chip.attach(small_shard(), tmp_path / "s")
    with pytest.raises(ChipFrozenError):
        chip.step_boundary(0, 3600.0)
    assert chip.busy_ns == 0  # the step did not proceed
    # Once the link is back and the receiver acks, the chip resumes.
    receiver = InProcessReceiver(chip.chipmaker_root, tmp_path / "rx")
    receiver.register(chip.certificate)
    chip._transport = receiver
    chip.flush_reports()
    assert not chip.frozen
    # The interrupted boot completed its sequence locally, so the chip monitors as usual.
    assert run_steps(chip, 8, 3600.0) > 0
    chip.close()
    assert not receiver.rejected
    cert = verify_chip_certificate(chip.certificate, chip.chipmaker_root)
    report = audit_log(receiver.log_path(chip.serial).read_bytes(), cert, chip.chipmaker_root)
    assert report.ok and report.snapshots > 0


def test_receiver_refuses_forged_or_foreign_entries(tmp_path) -> None:
    probe = _chip(tmp_path, None, "probe")
    receiver = InProcessReceiver(probe.chipmaker_root, tmp_path / "rx")
    line = b'{"not": "an entry"}'
    assert receiver.send(line) is None and "malformed" in receiver.rejected[-1]
    chip = Chip.open(probe.state_dir, transport=receiver)
    with pytest.raises(ReportError):
        chip.boot()  # not registered: no ack
    assert "unregistered" in receiver.rejected[-1]
    assert expected_ack("x", 1, b"a") != expected_ack("x", 1, b"b")


def test_a_refused_line_does_not_shift_the_receivers_chain(tmp_path) -> None:
    # The owner controls the link: it injects a forged entry for the chip ahead of the real one.
    import json

    probe = _chip(tmp_path, None, "probe")
    receiver = InProcessReceiver(probe.chipmaker_root, tmp_path / "rx")
    receiver.register(probe.certificate)
    forged = {
        "v": 1, "serial": probe.serial, "counter": 0, "boot": 1, "clock_ns": "0", "busy_ns": "0",
        "prev": "00" * 32, "kind": "tamper", "body": {"reason": "x"}, "sig": "AA==",
    }
    from computewatch.crypto.canonical import canonical_json

    assert receiver.send(canonical_json(forged)) is None and receiver.rejected
    chip = Chip.open(probe.state_dir, transport=receiver)
    chip.boot()  # the genuine entry 0 is checked against the genesis state, not the forgery
    chip.attach(small_shard(), tmp_path / "storage")
    run_steps(chip, 4, 3600.0)
    chip.close()
    assert receiver.log_path(chip.serial).read_bytes() == chip.log_path.read_bytes()
    assert json.loads(chip.log_path.read_bytes().split(b"\n")[0])["kind"] == "boot"


def test_a_restarted_receiver_resumes_its_stored_copy(tmp_path) -> None:
    probe = _chip(tmp_path, None, "probe")
    first = InProcessReceiver(probe.chipmaker_root, tmp_path / "rx")
    first.register(probe.certificate)
    chip = Chip.open(probe.state_dir, transport=first)
    chip.boot()
    chip.attach(small_shard(), tmp_path / "storage")
    run_steps(chip, 3, 3600.0)
    stored = first.log_path(chip.serial)
    with open(stored, "ab") as fh:
        fh.write(b'{"v":1,"ser')  # the receiver died mid-append
    second = InProcessReceiver(probe.chipmaker_root, tmp_path / "rx")  # a new receiver process
    second.register(chip.certificate)
    chip._transport = second
    run_steps(chip, 3, 3600.0, start=3)
    chip.close()
    assert not second.rejected
    assert stored.read_bytes() == chip.log_path.read_bytes()
    stored.write_bytes(stored.read_bytes().replace(b'"boot":1', b'"boot":2', 1))
    with pytest.raises(ReportError, match="stored copy"):
        InProcessReceiver(probe.chipmaker_root, tmp_path / "rx").register(chip.certificate)
