"""A cheating Prover's edits to its own transcript, each kept internally consistent.

Every edit rewrites what it touches the way an honest writer would: a changed checkpoint is
re-encoded, stored under its new content address and re-indexed; changed step records get
batch roots that match their new sample ids; a manifest is re-signed. So none of these is caught
by a digest or a signature of the Prover's own: only the Verifier's checks against the chips'
logs, the committed seed and the precommitted program can catch them (paper §5.1; ANCHORS.md,
"a forged but internally consistent checkpoint chain passes" OpenVerifiableLLM's audit).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from computewatch.crypto.signing import SigningKey
from computewatch.formats.checkpoint import Checkpoint, CheckpointIndex, encode_checkpoint
from computewatch.formats.manifest import read_manifest, write_manifest, write_public_key
from computewatch.formats.snapshot_records import encode_snapshot_record, snapshot_file
from computewatch.formats.steps import StepLog, StepRecord, batch_root
from computewatch.formats.storage import ObjectStore, RunStorage

__all__ = [
    "edit_checkpoint",
    "edit_snapshot_records",
    "edit_steps",
    "interpolate_checkpoints",
    "resign_manifest",
]

Path = str | os.PathLike[str]


def edit_checkpoint(run_dir: Path, rank: int, step: int, mutate: Callable[[Checkpoint], None]) -> str:
    """Change one checkpoint in place and fix up its content address and index; returns the new digest."""
    storage = RunStorage(run_dir, create=False)
    index = CheckpointIndex(storage, rank)
    ckpt = index.load(ObjectStore(storage), step)
    mutate(ckpt)
    data = encode_checkpoint(ckpt)
    digest = ObjectStore(storage).put(data)
    index.add(step, digest, len(data))
    return digest


def interpolate_checkpoints(run_dir: Path, rank: int = 0) -> list[int]:
    """Replace every checkpoint between W0 and the final one by the straight line between them
    (Zhang et al.'s straight-line trajectory); returns the steps rewritten."""
    storage = RunStorage(run_dir, create=False)
    index = CheckpointIndex(storage, rank)
    steps = [e["step"] for e in index.entries()]
    first, last = index.load(ObjectStore(storage), steps[0]), index.load(ObjectStore(storage), steps[-1])
    span = steps[-1] - steps[0]
    for step in steps[1:-1]:
        alpha = (step - steps[0]) / span

        def blend(ckpt: Checkpoint, a: float = alpha) -> None:
            for name, t in ckpt.model.items():
                if t.is_floating_point():
                    ckpt.model[name] = torch.lerp(first.model[name], last.model[name], a).contiguous()

        edit_checkpoint(run_dir, rank, step, blend)
    return steps[1:-1]


def edit_steps(run_dir: Path, mutate: Callable[[list[StepRecord]], list[StepRecord]], hashes: list[bytes] | None = None) -> None:
    """Rewrite the step records (segment files kept where they were); when `hashes` (the
    per-sample hashes) are given, every batch root is recomputed to match its sample ids."""
    storage = RunStorage(run_dir, create=False)
    log = StepLog(storage)
    segments = log.segments()
    records = mutate(list(log.read()))
    if hashes is not None:
        records = [replace(r, batch_root=batch_root([hashes[i] for i in r.sample_ids]).hex()) for r in records]
    for _first, _last, name in segments:
        storage.remove(f"steps/{name}")
    cut = [first for first, _last, _name in segments if first < len(records)] + [len(records)]
    for lo, hi in itertools.pairwise(cut):
        if hi > lo:
            log.write_segment([replace(r, step=lo + i) for i, r in enumerate(records[lo:hi])])


def edit_snapshot_records(run_dir: Path, rank: int, mutate: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Rewrite rank `rank`'s snapshot records (duplicate, drop, redirect ...)."""
    storage = RunStorage(run_dir, create=False)
    rel = snapshot_file(rank)
    lines = [json.loads(line) for line in storage.read(rel).splitlines()] if storage.exists(rel) else []
    storage.write_atomic(rel, b"".join(encode_snapshot_record(rec) for rec in mutate(lines)))


def resign_manifest(run_dir: Path, key: SigningKey, **changes: Any) -> None:
    """Re-sign the manifest with another key (and publish that key as `keys/prover.pub`, as a
    Prover hoping the Verifier trusts the run directory would)."""
    storage = RunStorage(run_dir, create=False)
    manifest = read_manifest(storage)
    if changes:
        manifest = replace(manifest, precommitment=replace(manifest.precommitment, **changes))
    write_public_key(storage, key)
    write_manifest(storage, manifest, key)
