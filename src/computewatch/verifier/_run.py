"""A submitted run as the trusted cluster sees it: staged into private temporary storage.

The Prover hands in its run directory (raw inputs); a cluster job copies only the files it needs
into its own temporary folder, re-hashing every content-addressed object on the way (a file that
does not hash to its name is refused), verifies the manifest under the Prover key the Verifier
pinned (never `keys/prover.pub` from the run directory), and from then on reads only its copy,
which it deletes when the job ends. The Prover's private key is never copied.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.checkpoint import Checkpoint, CheckpointIndex
from computewatch.formats.dataset import SAMPLE_HASH_SIZE, DatasetCommitment
from computewatch.formats.layout import ShardLayout
from computewatch.formats.manifest import MANIFEST_FILE, Manifest, read_manifest
from computewatch.formats.precommitment import Precommitment
from computewatch.formats.program import PROGRAM_DIR, read_program_files
from computewatch.formats.snapshot_records import SNAPSHOTS_DIR, read_snapshot_records
from computewatch.formats.steps import STEPS_DIR, StepLog, StepRecord
from computewatch.formats.storage import ObjectStore, RunStorage, StoreError

__all__ = ["StagedRun", "staged_run"]


class _Stager:
    def __init__(self, source: RunStorage, target: Path) -> None:
        self.source = source
        self.src_store = ObjectStore(source)
        self.target = RunStorage(target)
        self.dst_store = ObjectStore(self.target)

    def _regular(self, rel: str) -> None:
        # The judge reads only regular files of the run: a link could point at another run or at
        # the Verifier's own files, a FIFO or device would never finish reading.
        local = self.source.local_path
        if local is not None and os.path.lexists(local / rel) and not stat.S_ISREG(os.lstat(local / rel).st_mode):
            raise StoreError(f"{rel} in the run directory is not a regular file (links, FIFOs and devices are refused)")

    def file(self, rel: str) -> None:
        if self.source.exists(rel) or os.path.lexists(self.source.path(rel)):
            self._regular(rel)
            self.target.write_atomic(rel, self.source.read(rel))

    def folder(self, rel: str) -> None:
        for name in self.source.listdir(rel):
            sub = f"{rel}/{name}"
            if self.source.fs.isdir(self.source.path(sub)) and not os.path.islink(self.source.path(sub)):
                self.folder(sub)
            else:
                self.file(sub)

    def objects(self, digests: Iterable[str]) -> None:
        for digest in digests:
            if not self.dst_store.has(digest):
                self._regular(self.src_store._rel(digest))
                self.dst_store.put(self.src_store.get(digest))  # get() re-hashes: a bad object is refused


@dataclass
class StagedRun:
    """The cluster's private copy of one run, manifest verified under a pinned key."""

    root: Path
    storage: RunStorage
    store: ObjectStore
    manifest: Manifest
    stager: _Stager | None = None  # set while the Prover's run directory can still be read

    @property
    def precommitment(self) -> Precommitment:
        return self.manifest.precommitment

    @property
    def layout(self) -> ShardLayout:
        return self.precommitment.layout

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    def steps(self) -> list[StepRecord]:
        return list(StepLog(self.storage).read())

    def checkpoint_entries(self, rank: int) -> list[dict[str, Any]]:
        return CheckpointIndex(self.storage, rank).entries()

    def checkpoint(self, step: int, rank: int) -> Checkpoint:
        return CheckpointIndex(self.storage, rank).load(self.store, step)

    def sample_hashes(self) -> list[bytes]:
        data = self.store.get(self.manifest.sample_hashes)
        if len(data) % SAMPLE_HASH_SIZE:
            raise StoreError(f"the sample-hash object is {len(data)} bytes, not a multiple of {SAMPLE_HASH_SIZE}")
        hashes = [data[i : i + SAMPLE_HASH_SIZE] for i in range(0, len(data), SAMPLE_HASH_SIZE)]
        if DatasetCommitment(hashes).root.hex() != self.precommitment.dataset["root"] or len(hashes) != self.precommitment.dataset["size"]:
            raise StoreError("the per-sample hashes do not reproduce the committed dataset root and size")
        return hashes

    def snapshot_records(self) -> list[dict[str, Any]]:
        return [rec for r in range(self.world_size) for rec in read_snapshot_records(self.storage, r)]

    def stage_object(self, digest: str) -> None:
        """Copy one more object in (re-hashed; CorruptObjectError/StoreError if it is bad)."""
        if self.stager is None:
            raise StoreError(f"object {digest} was not staged and the Prover's run directory is closed")
        self.stager.objects([digest])

    def program_files(self) -> dict[str, bytes]:
        return read_program_files(self.root / PROGRAM_DIR)

    def full_weights(self, step: int) -> dict[str, torch.Tensor]:
        """W_step reassembled from every rank's checkpoint through the layout."""
        shards = {}
        for rank in range(self.world_size):
            model = self.checkpoint(step, rank).model
            shards[rank] = [model[reg.param] for reg in self.layout.chips[rank]]
        return self.layout.reassemble(shards)


@contextmanager
def staged_run(
    run_dir: str,
    prover_keys: Sequence[VerifyKey],
    *,
    checkpoints: Iterable[tuple[int, int]] | str = (),
    snapshot_objects: bool = False,
) -> Iterator[StagedRun]:
    """Stage `run_dir` into a private temp folder: manifest, program, step records, checkpoint
    indexes and snapshot records always; the checkpoint objects `(rank, step)` listed (or "all");
    the snapshot copy-outs when asked. The copy is deleted when the context ends."""
    source = RunStorage(run_dir, create=False)
    if not source.exists(MANIFEST_FILE):
        raise StoreError(f"{run_dir}: no {MANIFEST_FILE}; not a transcript")
    tmp = Path(tempfile.mkdtemp(prefix="computewatch-cluster-run-"))
    try:
        stage = _Stager(source, tmp / "run")
        for rel in (MANIFEST_FILE,):
            stage.file(rel)
        for rel in (PROGRAM_DIR, STEPS_DIR, "checkpoints", SNAPSHOTS_DIR):
            stage.folder(rel)
        manifest = read_manifest(stage.target, list(prover_keys))
        run = StagedRun(tmp / "run", stage.target, stage.dst_store, manifest, stage)
        stage.objects([manifest.sample_hashes])
        pairs = None if checkpoints == "all" else set(checkpoints)
        wanted = [
            entry["digest"]
            for rank in range(run.world_size)
            for entry in run.checkpoint_entries(rank)
            if pairs is None or (rank, entry["step"]) in pairs
        ]
        stage.objects(wanted)
        if snapshot_objects:
            stage.objects(rec["object"] for rec in run.snapshot_records())
        yield run
    except ComputewatchError as exc:
        # Name the Prover's files, not the cluster's private copy of them.
        raise type(exc)(str(exc).replace(str(tmp / "run"), str(run_dir).rstrip("/"))) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
