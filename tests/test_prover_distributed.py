"""torch.distributed runs on the CPU with gloo: every rank is one chip (DDP replicas, FSDP shards)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from computewatch.chip import Chip
from _chips import TEST_SECRET_SEED
from computewatch.crypto.hashing import hash_regions, shard_digest
from computewatch.prover.replay import shard_from_checkpoints
from computewatch.prover.runner import TrainConfig, train
from computewatch.prover.transcript import Transcript

NONCE = b"computewatch-distributed-nonce"
STEPS = 6


def _run(out: Path, strategy: str, nproc: int) -> Transcript:
    # k = 1 so every snapshot's step has checkpoints to reassemble the full weights from.
    train(TrainConfig(out=out, preset="mlp", steps=STEPS, nproc=nproc, strategy=strategy, checkpoint_every=1, chip_secret_seed=TEST_SECRET_SEED,
                      nonce=NONCE, run_id=f"{strategy}-{nproc}", threads=1, snapshots_per_day=24.0,
                      chip_seconds_per_step=3600.0))
    return Transcript(out)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> Transcript:
    return _run(tmp_path_factory.mktemp("ddp") / "run", "ddp", 2)


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory: pytest.TempPathFactory) -> Transcript:
    return _run(tmp_path_factory.mktemp("fsdp") / "run", "fsdp", 2)


def _check_snapshots_explained(t: Transcript) -> int:
    snaps = t.snapshots()
    for entry in snaps:
        raw = t.snapshot_tensors(entry)
        mine = t.layout.slice_shard(t.full_weights(entry["step"]), entry["rank"])
        assert shard_digest(hash_regions(mine)).hex() == entry["shard_digest"]
        assert all(torch.equal(a, b) for a, b in zip(raw, mine, strict=True))
        assert shard_from_checkpoints(t, entry).explained
        # The other chip's slice is not this chip's snapshot (FSDP) or is identical (DDP).
        other = t.layout.slice_shard(t.full_weights(entry["step"]), (entry["rank"] + 1) % t.world_size)
        if t.layout.strategy == "fsdp":
            assert shard_digest(hash_regions(other)).hex() != entry["shard_digest"]
    return len(snaps)


def _check_chip_logs(t: Transcript) -> None:
    digest = t.manifest.precommitment.digest().hex()
    for chip_id in t.manifest.chips:
        assert chip_id is not None
        chip_dir = next(p for p in (Path(t.storage.root) / "chips").iterdir() if (p / "sealed").is_dir() and Chip.open(p).serial == chip_id)
        kinds = [(e.kind, e.body.get("digest")) for e in Chip.open(chip_dir).log]
        assert ("precommitment", digest) in kinds


def test_ddp_replicas_reassemble_and_explain_snapshots(ddp: Transcript) -> None:
    assert ddp.layout.strategy == "ddp" and ddp.world_size == 2
    assert ddp.verify()["steps"] == STEPS
    full = ddp.full_weights(STEPS)  # replicas must agree bit for bit, or reassembly refuses
    assert set(full) == {p.name for p in ddp.layout.params}
    assert len(set(ddp.manifest.chips)) == 2
    assert _check_snapshots_explained(ddp) > 0
    _check_chip_logs(ddp)


def test_fsdp_chips_hold_only_their_shard(fsdp: Transcript, ddp: Transcript) -> None:
    layout = fsdp.layout
    assert layout.strategy == "fsdp" and fsdp.verify()["steps"] == STEPS
    total = sum(p.numel for p in layout.params)
    for rank in range(2):
        ckpt = fsdp.checkpoint(STEPS, rank)
        held = sum(t.numel() for t in ckpt.model.values())
        assert held < total  # a shard, not a replica
        for region in layout.chips[rank]:
            assert tuple(ckpt.model[region.param].shape) == region.shape
    full = fsdp.full_weights(STEPS)
    reference = ddp.full_weights(STEPS)
    for name, tensor in full.items():
        # Same data and seed; only the reduction order differs between DDP and FSDP.
        assert torch.allclose(tensor, reference[name], atol=1e-5), name
    shards = {r: [fsdp.checkpoint(STEPS, r).model[reg.param] for reg in layout.chips[r]] for r in range(2)}
    assert all(torch.equal(a, b) for a, b in zip(layout.slice_shard(full, 1), shards[1], strict=True))
    assert _check_snapshots_explained(fsdp) > 0
    _check_chip_logs(fsdp)



def test_fsdp_four_ranks_uneven_shards(tmp_path: Path) -> None:
    # hidden = 5 rows over 4 ranks: chunks of 2, 2, 1 and 0 rows (a partial and an empty shard).
    mlp = {"vocab_size": 256, "context": 8, "n_embd": 16, "hidden": 5}
    train(TrainConfig(out=tmp_path / "run", preset="mlp", steps=3, nproc=4, strategy="fsdp", checkpoint_every=1, chip_secret_seed=TEST_SECRET_SEED,
                      nonce=NONCE, run_id="fsdp-4", threads=1, snapshots_per_day=24.0, chip_seconds_per_step=7200.0,
                      overrides={"model_config": mlp}))
    t = Transcript(tmp_path / "run")
    sizes = {r: {reg.param: reg.stop - reg.start for reg in t.layout.chips[r]} for r in range(4)}
    rows = [sizes[r]["fc.weight"] // t.layout.spec("fc.weight").shape[1] for r in range(4)]
    assert rows == [2, 2, 1, 0]
    assert t.verify()["steps"] == 3
    assert _check_snapshots_explained(t) > 0
