"""Segment replay, the executor's side (paper §5, Appendix D step 5): runs the Prover's program.

From the state at step `start` (a staged checkpoint per rank), apply one training step per
batch with the precommitted program and the committed samples the judge staged, and write the
rank's parameters after each step the judge asked to keep (and its full state after the last
one) into the executor's scratch folder. Nothing here compares anything: the judge hashes and
compares what comes back (`computewatch.verifier._compare`). A run of W ranks is replayed by W
processes over gloo with the same layout, so every reduction happens in the order it did in
training.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from computewatch.crypto.digest import blake3_bytes
from computewatch.formats.checkpoint import decode_checkpoint, restore
from computewatch.formats.program import deterministic_cpu, wrap_ddp
from computewatch.formats.seed import init_generator
from computewatch.verifier.protocol import ReplayJob

__all__ = ["advance_scheduler", "local_parameters", "replay_rank", "save_tensors", "split_batch", "staged_samples", "wrap_model"]


def split_batch(ids: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank r's contiguous part of a global batch (docs/formats.md, "Training program")."""
    if len(ids) % world:
        raise ValueError(f"a batch of {len(ids)} samples does not split evenly over {world} ranks")
    part = len(ids) // world
    return list(ids[rank * part : (rank + 1) * part])


def wrap_model(model: torch.nn.Module, strategy: str) -> torch.nn.Module:
    """The layout's parallelism: DDP replicas or FSDP2 `fully_shard` on the root module."""
    if strategy == "ddp":
        return wrap_ddp(model)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
    return model


def _module(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def local_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What the rank's chip holds: its parameters (FSDP: local shards), by name."""
    return {n: _local(p).detach() for n, p in _module(model).named_parameters()}


def advance_scheduler(scheduler: Any, steps: int) -> None:
    """Put a fresh scheduler at step `steps` without optimizer steps (its lr is a function of
    the step count, which is what the precommitment fixes)."""
    if scheduler is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
        for _ in range(steps):
            scheduler.step()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))
    return path.name


def staged_samples(inputs: Path, name: str, ids: Sequence[int], lengths: Sequence[int]) -> dict[int, bytes]:
    """The committed sample bytes the judge staged for a job, by id."""
    data = (inputs / name).read_bytes()
    out, at = {}, 0
    for i, n in zip(ids, lengths, strict=True):
        out[int(i)] = data[at : at + n]
        at += n
    return out


def _traced(step: Any, out: dict[str, Any]) -> Any:
    """`step` under the operator trace (`step_replay.OpTrace`); the trace lands in out["ops"]."""
    from computewatch.verifier.step_replay import OpTrace

    def run() -> Any:
        tracer = OpTrace()
        with tracer:
            loss = step()
        out["ops"] = [list(op) for op in tracer.ops]
        return loss

    return run


def replay_rank(program: Any, seed: bytes, strategy: str, rank: int, world: int, job: ReplayJob, inputs: Path, folder: Path, count_flops: Any) -> dict[str, Any]:
    """Replay the job's steps on one rank; writes its tensors into `folder`, returns what it saw."""
    deterministic_cpu(job.threads)
    samples = staged_samples(inputs, job.samples, job.sample_ids, job.lengths)
    model = program.build_model(init_generator(seed))
    model = wrap_model(model, strategy) if world > 1 else model
    optimizer = program.build_optimizer(model)
    scheduler = program.build_scheduler(optimizer)
    advance_scheduler(scheduler, job.start)
    if job.start_files:
        ckpt = decode_checkpoint((inputs / job.start_files[rank]).read_bytes(), what=f"checkpoint {job.start} rank {rank}")
        restore(ckpt, _module(model), optimizer, None, settings="live")
    out: dict[str, Any] = {"losses": [], "lr": [], "rng": [], "files": [], "flops": None}
    keep = set(job.keep)
    for i, ids in enumerate(job.batches):
        t = job.start + i
        if job.lr_scale != 1.0:  # calibration only: a spoof to measure false accepts
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * job.lr_scale
        out["rng"].append(blake3_bytes(torch.get_rng_state().numpy().tobytes()).hex())
        out["lr"].append(float(optimizer.param_groups[0]["lr"]))
        batch = program.collate([samples[s] for s in split_batch(ids, rank, world)])
        step = functools.partial(program.train_step, model, optimizer, scheduler, batch)
        if job.trace and i == len(job.batches) - 1:  # bisection to an operator: digests only leave
            step = _traced(step, out)
        if job.count_flops and out["flops"] is None:
            loss, count = count_flops(step)
            out["flops"] = count.to_json()
        else:
            loss = step()
        loss = float(loss)
        out["losses"].append(loss if math.isfinite(loss) else None)
        if t + 1 in keep:
            out["files"].append(save_tensors(local_parameters(model), folder / f"r{rank}-s{t + 1}.safetensors"))
    if job.final:
        state = {f"model/{k}": _local(v) for k, v in _module(model).state_dict().items()}
        for idx, entries in optimizer.state_dict()["state"].items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    state[f"optimizer/{idx}/{key}"] = _local(value)
        out["files"].append(save_tensors(state, folder / f"r{rank}-final.safetensors"))
    return out
