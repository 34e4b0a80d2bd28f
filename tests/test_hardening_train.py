"""Issue 12, training: options are checked before anything is made, limits the machine cannot
meet are refused, retries after a failed start work, and ranks never outlive their launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computewatch.chip import provision_chips
from computewatch.cli import app
from computewatch.cli.train import MAX_CHIP_SECONDS_PER_STEP, PRESET_NAMES
from computewatch.crypto.errors import ComputewatchError
from computewatch.formats.storage import StoreError
from computewatch.prover import runner as runner_module
from computewatch.prover.runner import TrainConfig, max_processes, train
from computewatch.prover.workloads import PRESETS

cli = CliRunner()


def test_resume_on_a_folder_without_a_run_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="holds no run to resume"):
        train(TrainConfig(out=tmp_path / "run", preset="mlp", steps=2, resume=True))
    assert not (tmp_path / "run").exists()
    r = cli.invoke(app, ["train", "--preset", "mlp", "--steps", "2", "--out", str(tmp_path / "run"), "--resume"])
    assert r.exit_code == 2 and "holds no run to resume" in r.stderr
    assert not (tmp_path / "run").exists()


def test_limits_the_machine_cannot_meet_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for bad, match in (
        (dict(nproc=max_processes() + 1), "per core of this machine"),
        (dict(snapshots_per_day=1e300), "snapshots_per_day"),
        (dict(chip_seconds_per_step=1e300), "chip_seconds_per_step"),
        (dict(preset="huge"), "huge"),
        (dict(chips_dir=tmp_path), "holds 0 chips"),
    ):
        with pytest.raises(ComputewatchError, match=match):
            train(TrainConfig(out=out, steps=2, **bad))  # type: ignore[arg-type]
        assert not out.exists()


def test_a_retry_after_provisioning_was_cut_short_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    provision_chips(out / "chips", 1, snapshots_per_day=24.0)  # a first attempt made one of two chips ...
    (out / "chips" / ".chip-0001.partial" / "sealed").mkdir(parents=True)  # ... and died making the second
    config = TrainConfig(out=out, preset="mlp", steps=2, nproc=2)
    dirs = runner_module._chip_dirs(config)
    assert [d.name for d in dirs] == ["chip-0000", "chip-0001"]
    assert runner_module._chip_dirs(config) == dirs  # and a resumed run keeps them


def test_progress_is_shown_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    r = cli.invoke(app, ["train", "--preset", "mlp", "--steps", "3", "--checkpoint-every", "2", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "training mlp on 1 chip(s): started (3 to do)" in r.stderr


def test_cli_bounds_match_the_library() -> None:
    from computewatch.chip import MAX_STEP_BUSY_S

    assert set(PRESET_NAMES) == set(PRESETS)
    assert MAX_CHIP_SECONDS_PER_STEP == MAX_STEP_BUSY_S == runner_module.MAX_STEP_BUSY_S


_LAUNCHER = r"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(__import__("os").getpid())])
print(child.pid, flush=True)
time.sleep(120)
"""
_RANK = r"""
import sys, time
from computewatch.prover.runner import _die_with_parent
_die_with_parent(int(sys.argv[1]))
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_rank_dies_with_its_launcher() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, _RANK], stdout=subprocess.PIPE)
    assert launcher.stdout is not None
    rank = int(launcher.stdout.readline())
    assert launcher.stdout.readline().strip() == b"ready"  # the rank asked the kernel to kill it with its parent
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(rank, 0)
        except ProcessLookupError:
            return
        # A zombie awaiting reaping by init counts as gone.
        try:
            if Path(f"/proc/{rank}/stat").read_text().split()[2] == "Z":
                return
        except OSError:
            return
        time.sleep(0.1)
    os.kill(rank, signal.SIGKILL)
    pytest.fail("the rank outlived its launcher")
