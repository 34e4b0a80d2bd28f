"""Reading a transcript 𝕋 = {𝕄, 𝔻, 𝕎} back from its run directory, checking everything it reads.

`Transcript(run_dir)` verifies the signed manifest on open; every other accessor re-hashes
what it loads (objects by digest, sample hashes against the dataset root, snapshot shards
against the shard digest the chip logged) and raises a `StoreError` naming the file and the
mismatch. `verify()` walks the whole transcript and checks what the transcript alone can show;
`not_verified()` says, in words, what it cannot (that needs the chip logs or a replay).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.digest import blake3_bytes
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.checkpoint import (
    Checkpoint,
    CheckpointIndex,
    decode_checkpoint,
)
from computewatch.formats.dataset import SAMPLE_HASH_SIZE, DatasetCommitment
from computewatch.formats.layout import ShardLayout
from computewatch.formats.manifest import Manifest, read_manifest
from computewatch.formats.seed import batches, derive_run_seed
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

    def verify(self, *, data_order: bool = False) -> dict[str, int]:
        """Check every file of the transcript; returns counts, raises StoreError on the first problem.

        Checked: the manifest's signature (on open); the sample hashes against the dataset root
        and the seed against root and nonce; step records (consecutive, batch roots against the
        committed sample hashes, with `data_order` the sample ids against the seed's data order
        (formats.seed.batches with the recorded global batch size: what every replayable
        training program follows; a Recorder fed other ids fails it), the RNG digest of every step
        that starts at a checkpoint against that checkpoint's RNG state); every rank's checkpoint
        index (W0 present, a checkpoint at every step segment's end, each object loads, has the
        indexed size, step, rank, world size and the layout's parameters); snapshot records
        (one per chip and counter, the manifest's chip, a recorded step, the copy-out hashes
        to the logged shard digest). What this cannot check: `not_verified()`.
        """
        pre = self.manifest.precommitment
        hashes = self.sample_hashes()
        if pre.dataset["size"] != len(hashes):
            raise StoreError(f"the manifest commits to {pre.dataset['size']} samples, the sample-hash object holds {len(hashes)}")
        if derive_run_seed(bytes.fromhex(pre.dataset["root"]), pre.nonce) != pre.seed:
            raise StoreError("the precommitted seed is not derived from the dataset root and nonce (computewatch-potd-v1)")
        steps = self.steps()
        self._verify_steps(steps, hashes, data_order)
        n_ckpt, rng_checked = self._verify_checkpoints(steps)
        snaps = self._verify_snapshots(len(steps))
        return {"steps": len(steps), "checkpoints": n_ckpt, "snapshots": len(snaps), "samples": len(hashes), "rng_checked": rng_checked}

    def _verify_steps(self, steps: list[StepRecord], hashes: list[bytes], data_order: bool) -> None:
        for rec in steps:
            try:
                root = batch_root([hashes[i] for i in rec.sample_ids]).hex()
            except IndexError:
                raise StoreError(f"step {rec.step}: sample id outside the committed dataset") from None
            if root != rec.batch_root:
                raise StoreError(f"step {rec.step}: batch_root does not match the per-sample hashes of its sample ids")
        if not steps or not data_order:
            return
        size = len(steps[0].sample_ids)
        if size > len(hashes):
            raise StoreError(f"step 0 takes {size} samples from a dataset of {len(hashes)}")
        order = batches(self.manifest.precommitment.seed, len(hashes), size, len(steps))
        for rec, (t, ids) in zip(steps, order, strict=True):
            if list(rec.sample_ids) != ids:
                raise StoreError(
                    f"step {t}: its sample ids are not the batch the committed seed's data order gives "
                    f"(computewatch-potd-v1, {size} samples a step): the step records were edited"
                )

    def _verify_checkpoints(self, steps: list[StepRecord]) -> tuple[int, int]:
        # Step segments are written when a checkpoint is taken: every segment ends one step
        # before a checkpoint, and W0 is always checkpointed.
        expected = {0} | {last + 1 for _first, last, _name in StepLog(self.storage).segments()}
        n_ckpt = rng_checked = 0
        for rank in range(self.world_size):
            entries = self.checkpoints(rank)
            indexed = {e["step"] for e in entries}
            missing = sorted(expected - indexed)
            if missing:
                what = "W0 (step 0)" if missing[0] == 0 else f"step {missing[0]}"
                raise StoreError(
                    f"rank {rank}'s checkpoint index lacks {what}, which its step records require: the index was "
                    "truncated or deleted (or the run was killed: resume it)"
                )
            held = {reg.param for reg in self.layout.chips[rank]}
            for entry in entries:
                where = f"checkpoint rank {rank} step {entry['step']}"
                if entry["step"] > len(steps):
                    raise StoreError(f"{where} has no step records after step {len(steps) - 1}")
                data = self.store.get(entry["digest"])
                if len(data) != entry["nbytes"]:
                    raise StoreError(f"{where}: the index says {entry['nbytes']} bytes, object {entry['digest']} has {len(data)}")
                try:
                    ckpt = decode_checkpoint(data, what=f"{where} ({entry['digest']})")
                except FormatError as exc:
                    raise StoreError(str(exc)) from None
                if ckpt.step != entry["step"] or ckpt.rank != rank:
                    raise StoreError(f"{where}: object {entry['digest']} says step {ckpt.step} rank {ckpt.rank}")
                if ckpt.world_size != self.world_size:
                    raise StoreError(f"{where} says world size {ckpt.world_size}, the layout {self.world_size}")
                if not held <= set(ckpt.model):
                    raise StoreError(f"{where} lacks parameters {sorted(held - set(ckpt.model))}")
                if rank == 0 and entry["step"] < len(steps) and "torch" in ckpt.rng:
                    # Step records carry rank 0's RNG state at the step's start: the checkpoint's.
                    if blake3_bytes(ckpt.rng["torch"].numpy().tobytes()).hex() != steps[entry["step"]].rng:
                        raise StoreError(f"step {entry['step']}: its rng digest is not that of the checkpoint at that step")
                    rng_checked += 1
                n_ckpt += 1
        return n_ckpt, rng_checked

    def _verify_snapshots(self, n_steps: int) -> list[dict[str, Any]]:
        snaps = self.snapshots()
        seen: dict[tuple[Any, int], int] = {}
        for entry in snaps:
            key = (entry["chip_id"], entry["counter"])
            where = f"snapshot record {entry['chip_id']}#{entry['counter']} (rank {entry['rank']})"
            if key in seen:
                raise StoreError(f"{where} appears twice: snapshot records were duplicated")
            seen[key] = entry["rank"]
            if entry["chip_id"] != self.manifest.chips[entry["rank"]]:
                raise StoreError(f"{where}: the manifest binds rank {entry['rank']} to chip {self.manifest.chips[entry['rank']]}")
            if entry["step"] > n_steps:
                raise StoreError(f"{where} is at step {entry['step']}, after the last recorded step {n_steps}")
            self.snapshot_tensors(entry)
        return snaps

    def not_verified(self, *, data_order: bool = False) -> list[str]:
        """What `verify(data_order=...)` cannot check from the transcript alone, in words."""
        out = [] if data_order else ["that the sample ids follow the committed seed's data order (verify(data_order=True))"]
        out += [
            "that the snapshot records are all the snapshots the chips logged (deleted records leave no trace "
            "here), and say what the logs say: audit each chip's log (computewatch chip verify-log) and compare",
            "the lr and loss of each step and the rng of steps between checkpoints (only a replay reproduces them)",
            "that each checkpoint's weights follow from the previous one and the recorded batches (a replay)",
            "that the training program rebuilds the committed samples and W0 (the Verifier's replay)",
        ]
        return out

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
