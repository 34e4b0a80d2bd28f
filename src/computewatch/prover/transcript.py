"""Reading a transcript 𝕋 = {𝕄, 𝔻, 𝕎} back from its run directory, checking everything it reads.

`Transcript(run_dir)` verifies the signed manifest on open; every other accessor re-hashes
what it loads (objects by digest, sample hashes against the dataset root, snapshot shards
against the shard digest the chip logged) and raises a `StoreError` naming the file and the
mismatch. `verify()` walks the whole transcript.
"""

from __future__ import annotations

import json
import os
from typing import Any

import safetensors.torch
import torch

from computewatch.crypto.hashing import hash_regions, shard_digest
from computewatch.crypto.signing import VerifyKey
from computewatch.prover.checkpoint import Checkpoint, CheckpointIndex
from computewatch.prover.dataset import SAMPLE_HASH_SIZE, DatasetCommitment
from computewatch.prover.layout import ShardLayout
from computewatch.prover.manifest import Manifest, read_manifest
from computewatch.prover.recorder import snapshot_file
from computewatch.prover.seed import derive_run_seed
from computewatch.prover.steps import StepLog, StepRecord, batch_root
from computewatch.prover.store import ObjectStore, RunStorage, StoreError

__all__ = ["SNAPSHOT_FIELDS", "Transcript"]

SNAPSHOT_FIELDS = frozenset({"rank", "chip_id", "counter", "step", "clock_ns", "shard_digest", "regions", "object", "stall_s"})


def _snapshot_record(obj: Any, rank: int) -> dict[str, Any]:
    """A snapshot record's fields and types (ValueError naming the problem otherwise)."""
    if not isinstance(obj, dict) or set(obj) != SNAPSHOT_FIELDS:
        raise ValueError(f"a snapshot record has exactly the fields {sorted(SNAPSHOT_FIELDS)}")
    if obj["rank"] != rank:
        raise ValueError(f"record of rank {obj['rank']!r} in the file of rank {rank}")
    for name in ("counter", "step"):
        if not isinstance(obj[name], int) or isinstance(obj[name], bool) or obj[name] < 0:
            raise ValueError(f"{name} must be a non-negative integer")
    if not isinstance(obj["clock_ns"], str) or not obj["clock_ns"] or not set(obj["clock_ns"]) <= set("0123456789"):
        raise ValueError("clock_ns must be a decimal string")
    for name in ("shard_digest", "object"):
        if not isinstance(obj[name], str) or len(obj[name]) != 64 or not set(obj[name]) <= set("0123456789abcdef"):
            raise ValueError(f"{name} must be 64 lowercase hex characters")
    if not (obj["chip_id"] is None or isinstance(obj["chip_id"], str)) or not isinstance(obj["regions"], list):
        raise ValueError("chip_id must be a string or null and regions a list")
    return obj


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
        out = []
        for r in ranks:
            rel = snapshot_file(r)
            if not self.storage.exists(rel):
                continue
            data = self.storage.read(rel)
            if data and not data.endswith(b"\n"):
                raise StoreError(f"{self.storage.path(rel)} is truncated (no final newline)")
            for lineno, line in enumerate(data.splitlines(), 1):
                try:
                    out.append(_snapshot_record(json.loads(line), r))
                except ValueError as exc:
                    raise StoreError(f"{self.storage.path(rel)} line {lineno} is malformed: {exc}") from None
        return out

    def snapshot_tensors(self, entry: dict[str, Any]) -> list[torch.Tensor]:
        """The raw shard a chip copied out, after checking it hashes to the digest the chip logged."""
        data = self.store.get(entry["object"])
        try:
            tensors = safetensors.torch.load(data)
        except Exception as exc:  # the library's own error types on malformed files
            raise StoreError(f"snapshot object {entry['object']} is not a safetensors file ({exc})") from None
        names = [f"region.{i:05d}" for i in range(len(tensors))]
        if sorted(tensors) != sorted(names):
            raise StoreError(f"snapshot object {entry['object']} does not hold tensors region.00000 .. region.{len(tensors) - 1:05d}")
        ordered = [tensors[name] for name in names]
        actual = shard_digest(hash_regions(ordered)).hex()
        if actual != entry["shard_digest"]:
            raise StoreError(
                f"snapshot {entry.get('chip_id')}#{entry.get('counter')} (step {entry['step']}): copy-out hashes to "
                f"{actual}, the chip logged {entry['shard_digest']}"
            )
        return ordered

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
