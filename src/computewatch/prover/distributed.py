"""torch.distributed integration: every rank is one chip (gloo on the CPU, NCCL on GPUs).

- ``ddp``: `DistributedDataParallel`; each chip holds a full replica (layout ``ddp``).
- ``fsdp``: FSDP2 `fully_shard` on the root module; each chip holds only its dim-0 shard of every
  parameter (and of its optimizer state); the layout records those slices so full weights can
  be reassembled and any chip's shard cut out again (`computewatch.formats.layout`).

The global batch of step t is split into W equal contiguous parts, rank r taking part r
(`split_batch`), so the recorded batch sequence is the same whatever the world size.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import torch
import torch.distributed as dist

from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import dtype_name
from computewatch.formats.layout import ShardLayout
from computewatch.formats.program import wrap_ddp
from computewatch.prover.config import STRATEGIES

__all__ = ["STRATEGIES", "free_port", "init_gloo", "shard_model", "split_batch"]


def free_port() -> int:
    """A TCP port that was free a moment ago, for the rendezvous of a local gloo group."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_gloo(rank: int, world_size: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)


def split_batch(sample_ids: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank r's contiguous part of the global batch (the batch size must divide evenly)."""
    if len(sample_ids) % world_size:
        raise FormatError(f"batch of {len(sample_ids)} samples does not split evenly over {world_size} ranks")
    part = len(sample_ids) // world_size
    return list(sample_ids[rank * part : (rank + 1) * part])


def shard_model(model: torch.nn.Module, strategy: str, world_size: int) -> tuple[torch.nn.Module, ShardLayout]:
    """Wrap or shard `model` for data-parallel training and return it with its shard layout.

    Build the optimizer from the returned model's parameters (FSDP replaces them with DTensors).
    """
    if strategy == "ddp":
        layout = ShardLayout.replicated(list(model.named_parameters()), world_size, "ddp")
        return wrap_ddp(model), layout
    if strategy != "fsdp":
        raise FormatError(f"unknown distributed strategy {strategy!r}; choose one of {STRATEGIES}")
    from torch.distributed.fsdp import fully_shard

    specs = [(name, tuple(p.shape), dtype_name(p.dtype)) for name, p in model.named_parameters()]
    layout = ShardLayout.dim0_sharded(specs, world_size)
    fully_shard(model)
    rank = dist.get_rank()
    # The layout is computed from torch.chunk semantics; check it against what FSDP really did.
    for (name, param), region in zip(model.named_parameters(), layout.chips[rank], strict=True):
        local = param.to_local() if hasattr(param, "to_local") else param
        if name != region.param or tuple(local.shape) != region.shape:
            raise FormatError(f"FSDP shard of {name!r} on rank {rank} has shape {list(local.shape)}, layout expects {list(region.shape)}")
    return model, layout
