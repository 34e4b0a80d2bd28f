"""Crash safety: a process killed while writing a checkpoint leaves a usable store, and resumes."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from _chips import TEST_SECRET_SEED
from _faults import KillInCheckpoint, faulty, installed
from computewatch.formats.storage import StoreError
from computewatch.prover.runner import TrainConfig, train
from computewatch.prover.transcript import Transcript

NONCE = b"computewatch-resume-nonce"
_CHILD = """
import sys
from pathlib import Path
from computewatch.prover.runner import TrainConfig, train
train(TrainConfig(out=Path(sys.argv[1]), preset="mlp", steps=30, checkpoint_every=10, nonce={nonce!r},
                  snapshots_per_day=24.0, chip_seconds_per_step=900.0, threads=1, resume=sys.argv[2] == "resume",
                  chip_secret_seed=b"computewatch tests"))
"""


def _child(out: Path, mode: str, *faults: str) -> subprocess.CompletedProcess[bytes]:
    code = _CHILD.format(nonce=NONCE)
    return subprocess.run([*faulty(*faults), "-c", code, str(out), mode], capture_output=True, timeout=120)


def test_killed_mid_checkpoint_then_resumed_matches_uninterrupted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = _child(out, "fresh", "kill-checkpoint=20")
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    # The torn checkpoint never became an object or an index entry; the rest reads back clean.
    assert list((out / "objects").rglob("*.tmp")), "the kill should leave a partial temp file behind"
    t = Transcript(out)
    assert [e["step"] for e in t.checkpoints(0)] == [0, 10]
    assert len(t.steps()) >= 10
    with pytest.raises(StoreError, match=r"lacks step 20.*killed: resume it"):
        t.verify()  # an unfinished transcript is not called verified

    resumed = _child(out, "resume")
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert not list((out / "objects").rglob("*.tmp"))
    t = Transcript(out)
    assert t.verify()["steps"] == 30
    assert [e["step"] for e in t.checkpoints(0)] == [0, 10, 20, 30]

    clean = tmp_path / "clean"
    train(TrainConfig(out=clean, preset="mlp", steps=30, checkpoint_every=10, nonce=NONCE, threads=1, monitor=False))
    assert Transcript(clean).checkpoints(0) == t.checkpoints(0)  # bit-identical W10..W30 and optimizer state
    assert [r.to_json() for r in Transcript(clean).steps()] == [r.to_json() for r in t.steps()]


def test_fsdp_run_killed_mid_checkpoint_resumes_bit_identical(tmp_path: Path) -> None:
    config = dict(preset="mlp", steps=9, nproc=2, strategy="fsdp", checkpoint_every=3, nonce=NONCE, run_id="fsdp-resume",
                  threads=1, chip_seconds_per_step=3600.0, chip_secret_seed=TEST_SECRET_SEED)
    out = tmp_path / "run"
    with installed(KillInCheckpoint(6)), pytest.raises(Exception, match="SIGKILL"):  # both ranks die writing step 6
        train(TrainConfig(out=out, **config))  # type: ignore[arg-type]
    assert [[e["step"] for e in Transcript(out).checkpoints(r)] for r in range(2)] == [[0, 3], [0, 3]]
    train(TrainConfig(out=out, resume=True, **config))  # type: ignore[arg-type]
    clean = tmp_path / "clean"
    train(TrainConfig(out=clean, monitor=False, **config))  # type: ignore[arg-type]
    resumed, reference = Transcript(out), Transcript(clean)
    assert resumed.verify()["steps"] == 9
    # Shards, sharded AdamW state (DTensors) and RNG states all match an uninterrupted run.
    assert all(resumed.checkpoints(r) == reference.checkpoints(r) for r in range(2))
