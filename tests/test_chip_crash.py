"""Crash safety: a writer SIGKILLed mid-append leaves a log that verifies up to the last
complete entry, and the chip continues appending after the restart."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from computewatch.chip import (
    Chip,
    ChipError,
    audit_log,
    provision_chips,
    verify_chip_certificate,
)
from _chips import leak_boot_key, small_shard
from _faults import faulty

_WRITER = r"""
import sys
from computewatch.chip import Chip
from computewatch.chip.exercise import small_shard
chip = Chip.open(sys.argv[1])
chip.boot()
chip.attach(small_shard(), sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    chip.log_precommitment(bytes([i % 256]) * 32, f"run-{i}")
    chip.step_boundary(i, 1800.0)
    i += 1
"""


def _audit(chip: Chip, data: bytes):
    return audit_log(data, verify_chip_certificate(chip.certificate, chip.chipmaker_root), chip.chipmaker_root)


def _only_killed_snapshots(report, data: bytes) -> bool:
    """True when every problem is a snapshot that a kill cut short (its trigger was persisted
    before the snapshot began, so the reveal after the unclean stop names it missing) or the
    entries a killed boot wrote after its last checkpoint (log v2: no signature of that boot
    covers them, so they are not attributed to the chip)."""
    lines = data.split(b"\n")
    for p in report.problems:
        e = json.loads(lines[p.entry])
        if "covered by no signed checkpoint of that boot" in p.problem or "does not end in a checkpoint" in p.problem:
            continue
        if e["kind"] != "schedule-reveal" or e["body"]["reason"] != "unclean-stop" or "has no snapshot" not in p.problem:
            return False
    return True


def test_sigkill_mid_append_leaves_a_valid_log(tmp_path: Path) -> None:
    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=50.0, checkpoint_every=7)
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    sizes, torn = [], []
    kill_at = None
    for round_ in range(3):
        faults = []
        if round_ == 2:
            # The last writer dies half-way through an append (a guaranteed torn tail).
            kill_at = sizes[-1] + 12
            faults = [f"kill-append={kill_at}"]
        proc = subprocess.Popen(
            [*faulty(*faults), "-c", _WRITER, str(state), str(tmp_path / "storage")],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        if round_ < 2:
            time.sleep(rng.uniform(0.05, 0.4))
            proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        data = (state / "log" / "chip.log").read_bytes()
        reopened = Chip.open(state)
        report = _audit(reopened, data)
        assert _only_killed_snapshots(report, data), (round_, report.problems[:3])
        complete = data.count(b"\n")
        assert report.entries == complete and len(reopened.log) == complete
        assert reopened.log.recovered_bytes == report.torn_tail_bytes
        sizes.append(complete)
        torn.append(report.torn_tail_bytes)
        # Appending continues after the crash: the boot after an unclean stop says so.
        reopened.boot()
        reopened.attach(small_shard(), tmp_path / "storage")
        boot = [e for e in reopened.log if e.kind == "boot"][-1]
        assert boot.body["previous_stop"] == "unclean" and boot.body["clock"]["safe"] is False
        assert reopened.clock_reading().restart_count == round_ + 1
        reopened.step_boundary(10_000 + round_, 3600.0)
        reopened.close()  # a clean stop; the next writer boots from it and is killed in turn
    final = Chip.open(state)
    report = final.audit()
    assert _only_killed_snapshots(report, final.log_path.read_bytes()), report.problems[:3]
    assert any("unclean stop" in w.problem for w in report.warnings)
    assert sizes == sorted(sizes) and sizes[0] > 3
    assert torn[2] > 0 and sizes[2] == kill_at


def test_torn_tail_is_cut_and_reported(tmp_path: Path) -> None:
    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=1.0)
    chip = Chip.open(state)
    chip.boot()
    chip.log_precommitment(b"\x01" * 32, "r")
    chip.checkpoint()  # log v2: the entries so far are attributed through it
    log = chip.log_path
    whole = log.read_bytes()
    body = {"run_id": "r", "digest": "00" * 32}
    fragment = chip.log.build("precommitment", body, boot=1, clock_ns=0, busy_ns=0, key=leak_boot_key(chip))
    log.write_bytes(whole + fragment[: len(fragment) // 2])
    report = _audit(chip, log.read_bytes())
    assert report.ok and report.torn_tail_bytes == len(fragment) // 2
    assert any("torn tail" in w.problem for w in report.warnings)
    again = Chip.open(state)
    assert again.log.recovered_bytes == len(fragment) // 2
    assert log.read_bytes() == whole
    again.boot()
    assert [e for e in again.log if e.kind == "boot"][-1].body["recovered_bytes"] == len(fragment) // 2
    again.close()
    assert again.audit().ok


def test_damaged_complete_entry_refuses_to_open_and_changes_nothing(tmp_path: Path) -> None:
    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=1.0)
    chip = Chip.open(state)
    chip.boot()
    chip.close()
    log = state / "log" / "chip.log"
    data = bytearray(log.read_bytes())
    data[5] = ord("{")
    log.write_bytes(bytes(data))
    with pytest.raises(ChipError, match="entry 0 is malformed"):
        Chip.open(state)  # a damaged log must not be opened for appending
    assert log.read_bytes() == bytes(data)


class _Killed(BaseException):
    """Stands in for SIGKILL: the chip process stops where it is, nothing more is written."""


def test_kill_during_a_snapshot_does_not_erase_it(tmp_path: Path, monkeypatch) -> None:
    # The owner sees a snapshot start (the step stalls, a copy-out appears) and cuts the power
    # before the entry is logged, hoping the reboot re-rolls the schedule from the last entry.
    import computewatch.chip.chip as chip_mod

    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=50.0)
    chip = Chip.open(state)
    chip.boot()
    chip.attach(small_shard(), tmp_path / "storage")
    before = len(chip.log)
    real = chip_mod.capture_shard

    def killed(*a, **k):
        raise _Killed

    monkeypatch.setattr(chip_mod, "capture_shard", killed)
    step = 0
    with pytest.raises(_Killed):
        while True:
            chip.step_boundary(step, 600.0)
            step += 1
    assert len(chip.log) == before  # nothing about the snapshot reached the log
    monkeypatch.setattr(chip_mod, "capture_shard", real)
    again = Chip.open(state)
    assert again.busy_ns == (step + 1) * 600 * 10**9  # busy time did not rewind past the trigger
    again.boot()
    again.close()
    report = again.audit()
    reveal = next(i for i, e in enumerate(again.log) if e.kind == "schedule-reveal")
    assert again.log[reveal].body["reason"] == "unclean-stop"
    assert any(p.entry == reveal and "has no snapshot entry" in p.problem for p in report.problems), report.problems


def test_sealed_state_survives_busy_time_beyond_2_53_ns(tmp_path) -> None:
    """More than 104 days of busy time (2**53 ns) must not break the sealed state's JSON."""
    from computewatch.chip.state import NVState, load_nv, save_nv

    (state,) = provision_chips(tmp_path, 1, snapshots_per_day=1.0)
    nv = load_nv(state)
    nv.trigger_busy_ns = 2**53 + 12345
    save_nv(state, nv)
    assert load_nv(state).trigger_busy_ns == 2**53 + 12345
    assert isinstance(NVState().to_json()["trigger_busy_ns"], str)
