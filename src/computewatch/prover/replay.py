"""Replay a segment of a single-chip run from its transcript, and explain a snapshot with it.

The Prover's own check before it hands a transcript over (and the core of the Verifier's
segment replay, paper §5 / Appendix D step 5): rebuild the workload from the precommitted
hyperparameters, restore the nearest checkpoint at or before the snapshot's step, re-apply the
recorded batches, and compare the result with the shard the chip copied out. On the CPU with the
recorded thread count this is exact, so digests must match bit for bit. A distributed run
replays exactly only with the same world size, backend and layout (docs/formats.md); that is
left to the Verifier's trusted cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.hashing import hash_regions
from computewatch.crypto.regions import shard_digest
from computewatch.formats.checkpoint import restore
from computewatch.formats.dataset import sample_hash
from computewatch.formats.seed import init_generator
from computewatch.formats.steps import batch_root
from computewatch.prover.runner import isolated_torch_state
from computewatch.prover.transcript import Transcript
from computewatch.formats.program import deterministic_cpu
from computewatch.prover.workloads import Workload

__all__ = ["SnapshotExplanation", "explain_snapshot", "replay_to_step", "shard_from_checkpoints"]


@dataclass(frozen=True)
class SnapshotExplanation:
    """The outcome of replaying the transcript up to one logged snapshot."""

    step: int
    from_checkpoint: int  # the checkpoint the replay started from
    replayed_steps: int
    logged_digest: str  # what the chip logged (hex)
    replayed_digest: str  # shard digest of the replayed weights, sliced as the chip held them
    copy_out_matches: bool  # the raw copy-out equals the replayed shard, byte for byte

    @property
    def explained(self) -> bool:
        return self.copy_out_matches and self.logged_digest == self.replayed_digest


def replay_to_step(transcript: Transcript, step: int) -> tuple[dict[str, torch.Tensor], int]:
    """W_step of a single-chip run, replayed from the nearest earlier checkpoint.

    Returns the parameters and the step of the checkpoint the replay started from.
    """
    if transcript.world_size != 1:
        raise ComputewatchError(
            f"exact replay here covers single-chip runs; this run has {transcript.world_size} chips "
            "(replay it with the same world size and backend)"
        )
    hp: dict[str, Any] = transcript.manifest.precommitment.hyperparameters
    steps = transcript.steps()
    if not 0 <= step <= len(steps):
        raise ComputewatchError(f"step {step} is outside the transcript (0..{len(steps)})")
    start = max((e["step"] for e in transcript.checkpoints(0) if e["step"] <= step), default=None)
    if start is None:
        raise ComputewatchError(f"no checkpoint at or before step {step}")
    if not isinstance(hp, dict) or "workload" not in hp:
        raise ComputewatchError("replay needs the demo runner's hyperparameters ({\"workload\": ..., \"run\": {...}})")
    with isolated_torch_state():
        deterministic_cpu(transcript.manifest.precommitment.environment["threads"])
        workload = Workload.from_hyperparameters(hp["workload"])
        corpus = workload.dataset()
        model = workload.build_model(init_generator(transcript.manifest.precommitment.seed))
        optimizer = workload.build_optimizer(model)
        scheduler = workload.build_scheduler(optimizer)
        restore(transcript.checkpoint(start, 0), model, optimizer, scheduler)
        for rec in steps[start:step]:
            samples = [corpus.sample(i) for i in rec.sample_ids]
            # The bytes replayed must be the committed ones (the demo corpus is this Python's stdlib).
            if batch_root([sample_hash(d) for d in samples]).hex() != rec.batch_root:
                raise ComputewatchError(
                    f"step {rec.step}: the samples this machine rebuilds do not hash to the recorded batch_root "
                    f"(a different Python release's stdlib, or a wrong step record)"
                )
            workload.train_step(model, optimizer, scheduler, workload.collate(samples))
        return {k: v.detach().clone() for k, v in model.named_parameters()}, start


def explain_snapshot(transcript: Transcript, entry: dict[str, Any]) -> SnapshotExplanation:
    """Replay the transcript to a snapshot's step and compare with what the chip logged."""
    raw = transcript.snapshot_tensors(entry)  # raises if the copy-out does not hash to the log
    weights, start = replay_to_step(transcript, int(entry["step"]))
    replayed = transcript.layout.slice_shard(weights, 0)
    same = _same_tensors(raw, replayed)
    return SnapshotExplanation(
        step=int(entry["step"]),
        from_checkpoint=start,
        replayed_steps=int(entry["step"]) - start,
        logged_digest=str(entry["shard_digest"]),
        replayed_digest=shard_digest(hash_regions(replayed)).hex(),
        copy_out_matches=same,
    )


def shard_from_checkpoints(transcript: Transcript, entry: dict[str, Any]) -> SnapshotExplanation:
    """A snapshot taken at a checkpointed step, any world size: reassemble the full weights
    from every chip's checkpoint through the shard layout, slice out the snapshotting chip's
    shard, and compare it with the copy-out and the logged digest (no replay needed)."""
    step, rank = int(entry["step"]), int(entry["rank"])
    if not all(any(e["step"] == step for e in transcript.checkpoints(r)) for r in range(transcript.world_size)):
        raise ComputewatchError(f"step {step} has no checkpoint on every chip; replay from an earlier one instead")
    raw = transcript.snapshot_tensors(entry)
    mine = transcript.layout.slice_shard(transcript.full_weights(step), rank)
    return SnapshotExplanation(
        step=step,
        from_checkpoint=step,
        replayed_steps=0,
        logged_digest=str(entry["shard_digest"]),
        replayed_digest=shard_digest(hash_regions(mine)).hex(),
        copy_out_matches=_same_tensors(raw, mine),
    )


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)  # bit for bit: -0.0 is not 0.0


def _same_tensors(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and torch.equal(_bits(x), _bits(y))
        for x, y in zip(a, b, strict=True)
    )
