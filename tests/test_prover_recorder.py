"""The Recorder's transcript: round trip, seeded start, bit-identical replay, snapshots explained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from computewatch.prover.runner import demo_program
from computewatch.chip import Chip
from _chips import TEST_SECRET_SEED
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.hashing import blake3_bytes, hash_regions, shard_digest
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.seed import batches, derive_run_seed, init_generator
from computewatch.formats.steps import batch_root
from computewatch.formats.storage import StoreError
from computewatch.prover.export import export_hashes
from computewatch.prover.config import CheckpointConfig, RunConfig
from computewatch.prover.recorder import Recorder
from computewatch.prover.replay import explain_snapshot, replay_to_step
from computewatch.prover.runner import TrainConfig, train
from computewatch.prover.transcript import Transcript
from computewatch.prover.workloads import Workload

NONCE = b"computewatch-test-nonce"


def _run(out: Path, **kw: object) -> Path:
    config = dict(preset="mlp", steps=24, checkpoint_every=8, nonce=NONCE, snapshots_per_day=24.0, chip_seconds_per_step=900.0,
                  chip_secret_seed=TEST_SECRET_SEED)
    config.update(kw)
    train(TrainConfig(out=out, **config))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("run") / "run")


def test_transcript_round_trip(run_dir: Path) -> None:
    t = Transcript(run_dir)
    counts = t.verify()
    assert counts["steps"] == 24 and counts["checkpoints"] == 4  # W0, W8, W16, W24
    pre = t.manifest.precommitment
    assert pre.checkpoint_every == 8 and pre.layout.strategy == "single"
    assert pre.hyperparameters["workload"]["workload"] == "mlp"
    assert [e["step"] for e in t.checkpoints(0)] == [0, 8, 16, 24]
    commitment = DatasetCommitment(t.sample_hashes())
    proof = commitment.inclusion_proof(5)
    assert commitment.root.hex() == pre.dataset["root"] and proof
    # The chip logged the precommitment digest and memory map before the first snapshot.
    chip = Chip.open(run_dir / "chips" / "chip-0000")
    kinds = [(e.kind, e.body) for e in chip.log]
    pre_at = next(i for i, (k, b) in enumerate(kinds) if k == "precommitment" and b["digest"] == pre.digest().hex())
    snap_at = [i for i, (k, _) in enumerate(kinds) if k == "snapshot"]
    assert snap_at and pre_at < min(snap_at)
    # The memory-map digest, rebuilt from the layout JSON as docs/formats.md describes it.
    layout = pre.layout.to_json()
    dtypes = {p["name"]: p["dtype"] for p in layout["params"]}
    documented = {"v": 1, "rank": 0, "world_size": 1, "strategy": "single",
                  "regions": [dict(r, dtype=dtypes[r["param"]]) for r in layout["chips"][0]["regions"]]}
    assert ("memory-map", {"run_id": pre.run_id, "digest": blake3_bytes(canonical_json(documented)).hex(), "hash": "blake3-256"}) in kinds
    # The hashed export carries digests, never sample ids or hyperparameters.
    doc = export_hashes(t)
    assert doc["precommitment_digest"] == pre.digest().hex()
    assert len(doc["steps"]["batch_roots"]) == 24 and len(doc["distances"]) == 3
    assert "sample_ids" not in str(doc) and "AdamW" not in str(doc)


def test_seeded_start_and_data_order(run_dir: Path) -> None:
    t = Transcript(run_dir)
    pre = t.manifest.precommitment
    assert pre.seed == derive_run_seed(bytes.fromhex(pre.dataset["root"]), NONCE)
    workload = Workload.from_hyperparameters(pre.hyperparameters["workload"])
    w0 = workload.build_model(init_generator(pre.seed)).state_dict()
    ckpt = t.checkpoint(0)
    assert all(torch.equal(ckpt.model[k], v) for k, v in w0.items())
    expected = [ids for _, ids in batches(pre.seed, pre.dataset["size"], workload.batch_size, 24)]
    assert [list(r.sample_ids) for r in t.steps()] == expected


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_step_records_hold_the_lr_and_rng_state_each_step_started_with(run_dir: Path) -> None:
    t = Transcript(run_dir)
    workload = Workload.from_hyperparameters(t.manifest.precommitment.hyperparameters["workload"])
    optimizer = workload.build_optimizer(workload.build_model(init_generator(t.manifest.precommitment.seed)))
    scheduler = workload.build_scheduler(optimizer)
    records = t.steps()
    for rec in records:  # lr of step t is the one it used, before its scheduler.step()
        assert rec.lr == optimizer.param_groups[0]["lr"], rec.step
        scheduler.step()
    for entry in t.checkpoints(0)[:-1]:  # the RNG state a step starts from is the checkpoint's
        rng = t.checkpoint(entry["step"]).rng["torch"]
        assert records[entry["step"]].rng == blake3_bytes(rng.numpy().tobytes()).hex()


def test_every_snapshot_is_explained_by_replay(run_dir: Path) -> None:
    t = Transcript(run_dir)
    snaps = t.snapshots()
    assert snaps, "the chip's rate should give snapshots in this run"
    for entry in snaps:
        result = explain_snapshot(t, entry)
        assert result.explained, result
        assert result.replayed_steps == entry["step"] - result.from_checkpoint >= 0
        # Independently of explain_snapshot: the raw copy-out equals the replayed shard.
        weights, _ = replay_to_step(t, entry["step"])
        replayed = t.layout.slice_shard(weights, 0)
        raw = t.snapshot_tensors(entry)
        assert all(torch.equal(a, b) for a, b in zip(raw, replayed, strict=True))
        assert shard_digest(hash_regions(replayed)).hex() == entry["shard_digest"]


def test_a_wrong_batch_record_is_not_explained(run_dir: Path, tmp_path: Path) -> None:
    """Replay catches a transcript whose recorded data does not produce the snapshot."""
    t = Transcript(run_dir)
    entry = next(e for e in t.snapshots() if e["step"] % 8 != 0)  # needs replayed steps
    forged = dict(entry)
    _weights, start = replay_to_step(t, entry["step"])
    assert start < entry["step"]
    # A snapshot claimed one step later than the chip saw cannot be explained.
    forged["step"] = entry["step"] + 1 if entry["step"] + 1 <= len(t.steps()) else entry["step"] - 1
    assert not explain_snapshot(t, forged).explained
    # Nor can a transcript whose replayed step records name other samples (batch roots recomputed).
    copy = Path(shutil.copytree(run_dir, tmp_path / "forged"))
    seg = next(p for p in sorted((copy / "steps").iterdir()) if int(p.name[:10]) <= start < int(p.name[11:21]) + 1)
    lines = seg.read_bytes().split(b"\n")
    rec = json.loads(lines[start - int(seg.name[:10])])
    rec["sample_ids"] = [(i + 1) % t.manifest.precommitment.dataset["size"] for i in rec["sample_ids"]]
    rec["batch_root"] = batch_root([t.sample_hashes()[i] for i in rec["sample_ids"]]).hex()
    lines[start - int(seg.name[:10])] = canonical_json(rec)
    seg.write_bytes(b"\n".join(lines))
    assert Transcript(copy).verify()  # a self-consistent transcript...
    assert not explain_snapshot(Transcript(copy), entry).explained  # ...that does not produce the logged shard
    with pytest.raises(ComputewatchError, match="outside the transcript"):
        replay_to_step(t, len(t.steps()) + 1)


def test_same_seed_gives_bit_identical_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    again = _run(tmp_path / "again", monitor=False)
    assert Transcript(again).checkpoints(0) == Transcript(run_dir).checkpoints(0)


def test_recorder_rejects_misuse(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="already holds a run"):
        _run(run_dir)
    with pytest.raises(StoreError, match="different precommitment"):
        _run(run_dir, resume=True, checkpoint_every=5)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    commitment = DatasetCommitment.from_samples([b"a", b"b"])
    rec = Recorder(tmp_path / "r", model=model, optimizer=opt, scheduler=None, hyperparameters={"x": 1},
                   dataset=commitment, nonce=b"n", program=demo_program())
    with pytest.raises(ComputewatchError, match="outside"):
        rec.step(0, [0])
    with rec:
        rec.step(0, [0, 1])
        with pytest.raises(FormatError, match="expected step 1, got 3"):
            rec.step(3, [0])
        for bad in ([-1], [2], []):  # -1 would record the last sample's hash
            with pytest.raises(FormatError, match=r"sample ids must be 0..1"):
                rec.step(1, bad)
        rec.step(1, torch.tensor([1, 0]))
    with pytest.raises(FormatError, match="JSON"):
        Recorder(tmp_path / "r2", model=model, optimizer=opt, scheduler=None, hyperparameters={"x": float("nan")},
                 dataset=commitment, nonce=b"n", program=demo_program())


def test_tampered_manifest_and_objects_are_reported(tmp_path: Path) -> None:
    out = _run(tmp_path / "t", steps=8, checkpoint_every=4, monitor=False)
    t = Transcript(out)
    digest = t.checkpoints(0)[1]["digest"]
    path = Path(t.store.path_of(digest))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"object {digest} is corrupted"):
        t.verify()
    manifest = out / "manifest.dsse.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"payload":"', b'"payload":"e'))
    with pytest.raises(StoreError, match="does not verify"):
        Transcript(out)


def test_recorder_on_an_fsspec_url() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    commitment = DatasetCommitment.from_samples([bytes([i]) for i in range(6)])
    url = "memory://computewatch-test-recorder"
    with Recorder(url, model=model, optimizer=opt, scheduler=None, hyperparameters={"lr": 0.1},
                  dataset=commitment, nonce=b"n", program=demo_program(),
                  config=RunConfig(checkpoint=CheckpointConfig(every=2))) as rec:
        for step in range(3):
            model(torch.randn(4, 3)).sum().backward()
            opt.step()
            rec.step(step, [step, step + 1], 0.5)
    t = Transcript(url)
    assert t.verify()["steps"] == 3
    assert [e["step"] for e in t.checkpoints(0)] == [0, 2, 3]
    assert torch.equal(t.full_weights(3)["weight"], model.weight.detach())


def test_snapshot_digest_mismatch_is_reported(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    lines = (copy / "snapshots" / "rank-00000.jsonl").read_text().splitlines()
    first = lines[0]
    logged = json.loads(first)["shard_digest"]
    lines[0] = first.replace(logged, "0" * 64)
    (copy / "snapshots" / "rank-00000.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match=f"copy-out hashes to {logged}, the chip logged 0000"):
        Transcript(copy).verify()
