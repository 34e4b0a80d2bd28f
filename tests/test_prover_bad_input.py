"""Damaged or hostile transcript files get a clear error naming the problem (never a traceback),
and recovery paths (resume, signing an export) never destroy what is stored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from computewatch.prover.runner import demo_program
from computewatch.chip.snapshot import SnapshotRecord, capture_shard
from _chips import TEST_SECRET_SEED
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope, statement
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.checkpoint import (
    CheckpointIndex,
    decode_checkpoint,
    encode_safetensors,
)
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.manifest import (
    MANIFEST_FILE,
    MANIFEST_PREDICATE,
    PROVER_PUB,
    prover_key,
)
from computewatch.formats.steps import StepLog, StepRecord
from computewatch.formats.storage import RunStorage, StoreError
from computewatch.prover import recorder as recorder_module
from computewatch.prover.config import ChipConfig, DistributedConfig, RunConfig
from computewatch.prover.recorder import Recorder
from computewatch.prover.replay import replay_to_step
from computewatch.prover.runner import TrainConfig, train
from computewatch.prover.transcript import Transcript

NONCE = b"computewatch-bad-input-nonce"


def _train(out: Path, **kw: Any) -> Path:
    config: dict[str, Any] = dict(preset="mlp", steps=8, checkpoint_every=4, nonce=NONCE, threads=1, snapshots_per_day=24.0,
                                  chip_seconds_per_step=3600.0, chip_secret_seed=TEST_SECRET_SEED)
    config.update(kw)
    train(TrainConfig(out=out, **config))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("bad") / "run")


@pytest.fixture
def copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def _record(**changes: Any) -> dict[str, Any]:
    rec = {"step": 0, "sample_ids": [1, 2], "batch_root": "ab" * 32, "lr": 0.1, "loss": 1.0, "rng": "cd" * 32}
    rec.update(changes)
    return rec


@pytest.mark.parametrize(
    "changes",
    [{"sample_ids": [-1]}, {"sample_ids": [True]}, {"sample_ids": []}, {"step": -1}, {"batch_root": "Z" * 64},
     {"lr": True}, {"rng": "CD" * 32}],
)
def test_step_records_reject_values_that_would_pass_for_others(changes: dict[str, Any]) -> None:
    # A sample id of -1 would otherwise index the last sample's hash and verify.
    with pytest.raises(FormatError):
        StepRecord.from_json(_record(**changes))
    StepRecord.from_json(_record())


def test_forged_negative_sample_id_is_reported(copy: Path) -> None:
    seg = next((copy / "steps").iterdir())
    lines = seg.read_bytes().split(b"\n")
    first = json.loads(lines[0])
    # Python would read hashes[i - n] as hashes[i]: the batch root would still match.
    first["sample_ids"][0] -= Transcript(copy).manifest.precommitment.dataset["size"]
    lines[0] = canonical_json(first)
    seg.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreError, match="line 1 is malformed"):
        Transcript(copy).verify()


def test_step_count_stops_at_a_gap(tmp_path: Path) -> None:
    log = StepLog(RunStorage(tmp_path))
    good = StepRecord(0, (0,), "ab" * 32, 0.1, None, "cd" * 32)
    log.write_segment([good])
    log.write_segment([StepRecord(2, (0,), "ab" * 32, 0.1, None, "cd" * 32)])
    assert log.count() == 1  # not 3: a resume must not pick a checkpoint whose step records are missing


def test_malformed_checkpoint_index_and_metadata(tmp_path: Path) -> None:
    storage = RunStorage(tmp_path)
    bad_entries: list[Any] = [[{"step": 0}], [{"step": 0, "digest": "x", "nbytes": 1}],
                              [{"step": 4, "digest": "ab" * 32, "nbytes": 1}, {"step": 4, "digest": "ab" * 32, "nbytes": 1}]]
    for entries in bad_entries:
        storage.write_atomic("checkpoints/rank-00000.json", canonical_json({"v": 1, "rank": 0, "checkpoints": entries}))
        with pytest.raises(StoreError, match="checkpoint index"):
            CheckpointIndex(storage, 0).entries()
    meta = canonical_json({"v": 1, "format": "computewatch/checkpoint", "step": 0}).decode()
    with pytest.raises(FormatError, match="metadata must have exactly the fields"):
        decode_checkpoint(encode_safetensors({"model/w": torch.zeros(2)}, {"computewatch": meta}))


def test_malformed_snapshot_records(copy: Path) -> None:
    path = copy / "snapshots" / "rank-00000.jsonl"
    lines = path.read_bytes().splitlines()
    assert lines, "the chip's rate should give snapshots in this run"
    rec = json.loads(lines[0])
    assert isinstance(rec["clock_ns"], str)  # a decimal string, like the chip log's
    del rec["object"]
    path.write_bytes(b"\n".join([canonical_json(rec), *lines[1:]]) + b"\n")
    with pytest.raises(StoreError, match=r"line 1 is malformed.*exactly the fields"):
        Transcript(copy).verify()
    path.write_bytes(b"\n".join(lines) + b"\n" + lines[0][:20])  # torn tail
    with pytest.raises(StoreError, match="truncated"):
        Transcript(copy).snapshots()


def test_resume_repairs_a_torn_snapshot_file(copy: Path) -> None:
    path = copy / "snapshots" / "rank-00000.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + whole[:25])
    _train(copy, resume=True)
    assert path.read_bytes() == whole
    assert Transcript(copy).verify()["snapshots"] == whole.count(b"\n")


class _LongLivedChip:
    """A chip past 104 days of chip time (2**53 ns), snapshotting at every step boundary."""

    serial = "chip-long-lived"

    def attach(self, tensors: Any, storage_dir: Any) -> None:
        self.tensors, self.dir = list(tensors), Path(storage_dir)

    def log_precommitment(self, digest: bytes, run_id: str) -> None:
        pass

    def log_memory_map(self, memory_map: Any, run_id: str) -> None:
        pass

    def step_boundary(self, step: int, busy_seconds: float) -> list[Any]:
        cap = capture_shard(self.tensors, self.dir, serial=self.serial, counter=step, step=step)
        return [SnapshotRecord(step, step, 2**60 + step, 0, (), cap.digest.hex(), tuple(cap.regions), cap.path, 0.0)]


def test_chip_clock_beyond_2_53_ns(tmp_path: Path) -> None:
    # Snapshot records must still encode as canonical JSON (the writer thread failed here).
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(tmp_path / "r", model=model, optimizer=opt, scheduler=None, hyperparameters={}, chip=_LongLivedChip(),
                  dataset=DatasetCommitment.from_samples([b"a", b"b"]), nonce=b"n", program=demo_program()) as rec:
        for step in range(2):
            model(torch.ones(1, 2)).sum().backward()
            opt.step()
            rec.step(step, [step])
    t = Transcript(tmp_path / "r")
    assert [s["clock_ns"] for s in t.snapshots()] == [str(2**60 + 1), str(2**60 + 2)]
    assert t.verify()["snapshots"] == 2


def test_run_with_its_own_key_publishes_it_and_export_signing_never_replaces_it(tmp_path: Path) -> None:
    key = SigningKey.generate()
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = tmp_path / "r"
    with Recorder(out, model=model, optimizer=opt, scheduler=None, hyperparameters={}, key=key,
                  dataset=DatasetCommitment.from_samples([b"a", b"b"]), nonce=b"n", program=demo_program()):
        pass
    pub = (out / "keys" / "prover.pub").read_bytes()
    assert pub == key.public_key.to_pem()
    Transcript(out)  # verifies with keys/prover.pub
    assert not (out / "keys" / "prover.key").exists()
    with pytest.raises(StoreError, match="no Prover private key"):
        prover_key(RunStorage(out))  # export --signed: never a fresh key that replaces prover.pub
    assert (out / "keys" / "prover.pub").read_bytes() == pub
    (out / "keys" / "prover.key").write_bytes(SigningKey.generate().to_pem())
    with pytest.raises(StoreError, match="does not match"):
        prover_key(RunStorage(out))


def test_signed_but_malformed_manifest_is_reported(copy: Path) -> None:
    key = prover_key(RunStorage(copy))
    real = Transcript(copy).manifest.predicate()
    for predicate in ({"v": 1}, dict(real, chips=[3]), dict(real, precommitment=[]), dict(real, sample_hashes=7),
                      dict(real, precommitment=dict(real["precommitment"], checkpoint_every="4"))):
        stmt = statement([("precommitment", {"blake3": "00" * 32})], MANIFEST_PREDICATE, predicate)
        (copy / MANIFEST_FILE).write_bytes(sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), key).to_json())
        with pytest.raises(StoreError, match="is malformed"):
            Transcript(copy)
    assert (copy / PROVER_PUB).exists()


def test_replay_refuses_samples_that_are_not_the_committed_ones(copy: Path) -> None:
    seg = copy / "steps" / "0000000000-0000000003.jsonl"
    lines = seg.read_bytes().split(b"\n")
    rec = json.loads(lines[1])
    rec["batch_root"] = "00" * 32
    lines[1] = canonical_json(rec)
    seg.write_bytes(b"\n".join(lines))
    with pytest.raises(ComputewatchError, match="step 1: the samples this machine rebuilds do not hash"):
        replay_to_step(Transcript(copy), 3)


def test_resume_after_a_kill_before_w0_was_committed(tmp_path: Path) -> None:
    out = _train(tmp_path / "run", monitor=False)
    reference = Transcript(out).checkpoints(0)
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "steps")
    _train(out, monitor=False, resume=True)
    assert Transcript(out).checkpoints(0) == reference


def test_reading_never_creates_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run directory"):
        Transcript(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_bad_strategy_or_preset_fails_before_spawning(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="unknown distributed strategy"):
        train(TrainConfig(out=tmp_path / "a", nproc=2, strategy="zero3", monitor=False))
    with pytest.raises(FormatError, match="unknown workload preset"):
        train(TrainConfig(out=tmp_path / "b", nproc=2, preset="huge", monitor=False))


def test_given_chip_ids_still_synchronise_ranks_before_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Rank 0 must not write the manifest before every rank has looked for one (else a fresh
    # rank 1 sees "already holds a run"): the chip-id collective runs even when ids are given.
    out = tmp_path / "run"
    gathered: list[bool] = []

    def all_gather_object(target: list[Any], obj: Any) -> None:
        gathered.append((out / MANIFEST_FILE).exists())
        target[:] = [obj] * len(target)

    monkeypatch.setattr(recorder_module, "_dist_ready", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: None)
    monkeypatch.setattr(torch.distributed, "broadcast_object_list", lambda box, src=0: None)  # rank 0 keeps its run id
    model = torch.nn.Linear(2, 2)
    with Recorder(out, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
                  hyperparameters={}, dataset=DatasetCommitment.from_samples([b"a"]), nonce=b"n", program=demo_program(),
                  config=RunConfig(chip=ChipConfig(ids=("chip-a", "chip-b")), distributed=DistributedConfig(world_size=2))):
        pass
    # The chip-id collective ran before the manifest existed; the second is the step
    # commitments' gather at the clean exit (issue 19).
    assert gathered == [False, True]
    assert Transcript(out).manifest.chips == ("chip-a", "chip-b")


def test_resume_records_snapshots_a_killed_writer_never_recorded(copy: Path) -> None:
    path = copy / "snapshots" / "rank-00000.jsonl"
    lines = path.read_bytes().splitlines()
    assert len(lines) >= 2
    path.write_bytes(lines[0] + b"\n")  # the other ingestions were still queued when the process died
    _train(copy, resume=True)
    after = Transcript(copy).snapshots()
    expected = [json.loads(line) for line in lines]
    assert sorted(after, key=lambda e: e["counter"]) == [dict(e, stall_s=None) if i else e for i, e in enumerate(expected)]
    assert Transcript(copy).verify()["snapshots"] == len(lines)
