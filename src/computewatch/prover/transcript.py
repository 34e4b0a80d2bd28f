"""Reading a transcript 𝕋 = {𝕄, 𝔻, 𝕎} back from its run directory, checking everything it reads.

`Transcript(run_dir)` verifies the signed manifest on open; every other accessor re-hashes
what it loads (objects by digest, sample hashes against the dataset root, snapshot shards
against the shard digest the chip logged) and raises a `StoreError` naming the file and the
mismatch. `verify()` walks the whole transcript.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from computewatch.crypto.signing import VerifyKey
from computewatch.formats.checkpoint import Checkpoint, CheckpointIndex
from computewatch.formats.dataset import SAMPLE_HASH_SIZE, DatasetCommitment
from computewatch.formats.layout import ShardLayout
from computewatch.formats.manifest import Manifest, read_manifest
from computewatch.formats.seed import derive_run_seed
from computewatch.formats.snapshot_records import load_copy_out, read_snapshot_records
from computewatch.formats.steps import StepLog, StepRecord, batch_root
from computewatch.formats.storage import ObjectStore, RunStorage, StoreError

__all__ = ["Transcript"]

class Transcript:
    """A run directory opened for reading (local path or fsspec URL)."""

    def __init__(self, run_dir: str | os.PathLike[str], keys: list[VerifyKey] | None = None) -> None:
        self.storage = RunStorage(run_dir, create=False)  # reading never creates folders
        self.manifest: Manifest = read_manifest(self.storage, keys)
        self.store = ObjectStore(self.storage)

    @property
    def layout(self) -> ShardLayout:
        return self.manifest.precommitment.layout

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    def steps(self) -> list[StepRecord]:
        return list(StepLog(self.storage).read())

    def sample_hashes(self) -> list[bytes]:
        """Per-sample hashes, checked against the dataset root the manifest commits to."""
        data = self.store.get(self.manifest.sample_hashes)
        if len(data) % SAMPLE_HASH_SIZE:
            raise StoreError(f"sample-hash object {self.manifest.sample_hashes} is {len(data)} bytes, not a multiple of 32")
        hashes = [data[i : i + SAMPLE_HASH_SIZE] for i in range(0, len(data), SAMPLE_HASH_SIZE)]
        if DatasetCommitment(hashes).root.hex() != self.manifest.precommitment.dataset["root"]:
            raise StoreError("per-sample hashes do not reproduce the committed dataset root")
        return hashes

    def checkpoints(self, rank: int = 0) -> list[dict[str, Any]]:
        return CheckpointIndex(self.storage, rank).entries()

    def checkpoint(self, step: int, rank: int = 0) -> Checkpoint:
        return CheckpointIndex(self.storage, rank).load(self.store, step)

    def full_weights(self, step: int) -> dict[str, torch.Tensor]:
        """W_step as full parameters, reassembled from every rank's checkpoint through the layout."""
        shards = {}
        for rank in range(self.world_size):
            model = self.checkpoint(step, rank).model
            shards[rank] = [model[reg.param] for reg in self.layout.chips[rank]]
        return self.layout.reassemble(shards)

    def snapshots(self, rank: int | None = None) -> list[dict[str, Any]]:
        """Every snapshot record (docs/formats.md), checked for its fields; StoreError names a bad line."""
        ranks = range(self.world_size) if rank is None else [rank]
        return [rec for r in ranks for rec in read_snapshot_records(self.storage, r)]

    def snapshot_tensors(self, entry: dict[str, Any]) -> list[torch.Tensor]:
        """The raw shard a chip copied out, after checking it hashes to the digest the chip logged."""
        return load_copy_out(self.store.get(entry["object"]), entry)

    def verify(self) -> dict[str, int]:
        """Check every file of the transcript; returns counts, raises StoreError on the first problem."""
        pre = self.manifest.precommitment
        hashes = self.sample_hashes()
        if pre.dataset["size"] != len(hashes):
            raise StoreError(f"the manifest commits to {pre.dataset['size']} samples, the sample-hash object holds {len(hashes)}")
        if derive_run_seed(bytes.fromhex(pre.dataset["root"]), pre.nonce) != pre.seed:
            raise StoreError("the precommitted seed is not derived from the dataset root and nonce (computewatch-potd-v1)")
        steps = self.steps()
        for rec in steps:
            try:
                root = batch_root([hashes[i] for i in rec.sample_ids]).hex()
            except IndexError:
                raise StoreError(f"step {rec.step}: sample id outside the committed dataset") from None
            if root != rec.batch_root:
                raise StoreError(f"step {rec.step}: batch_root does not match the per-sample hashes of its sample ids")
        n_ckpt = 0
        for rank in range(self.world_size):
            for entry in self.checkpoints(rank):
                ckpt = self.checkpoint(entry["step"], rank)
                if ckpt.world_size != self.world_size:
                    raise StoreError(f"checkpoint rank {rank} step {entry['step']} says world size {ckpt.world_size}, the layout {self.world_size}")
                held = {reg.param for reg in self.layout.chips[rank]}
                if not held <= set(ckpt.model):
                    raise StoreError(f"checkpoint rank {rank} step {entry['step']} lacks parameters {sorted(held - set(ckpt.model))}")
                if entry["step"] > len(steps):
                    raise StoreError(f"checkpoint rank {rank} step {entry['step']} has no step records after step {len(steps) - 1}")
                n_ckpt += 1
        snaps = self.snapshots()
        for entry in snaps:
            self.snapshot_tensors(entry)
        return {"steps": len(steps), "checkpoints": n_ckpt, "snapshots": len(snaps), "samples": len(hashes)}

    def summary(self) -> dict[str, Any]:
        pre = self.manifest.precommitment
        return {
            "run_id": pre.run_id,
            "run_dir": self.storage.url,
            "precommitment_digest": pre.digest().hex(),
            "dataset_root": pre.dataset["root"],
            "dataset_size": pre.dataset["size"],
            "strategy": self.layout.strategy,
            "world_size": self.world_size,
            "chips": list(self.manifest.chips),
            "checkpoint_every": pre.checkpoint_every,
            "steps": StepLog(self.storage).count(),
            "checkpoints": {r: [e["step"] for e in self.checkpoints(r)] for r in range(self.world_size)},
            "snapshots": len(self.snapshots()),
            "objects": len(self.store.digests()),
        }
