"""Step commitments: what every step record commits about each rank's state after the step.

After optimizer step t every rank r commits

    {"rank": r, "weights": hex, "optimizer": hex, "update_norm": float}

- ``weights``: the shard digest (docs/formats.md, "Regions and shard digests") of the rank's
  parameters in ``named_parameters`` order (FSDP: its local shards), exactly what the rank's chip
  hashes when it snapshots at boundary t + 1, so a logged snapshot pins the chain at that step;
- ``optimizer``: the shard digest of the rank's optimizer-state tensors in checkpoint name order
  (``<param index>/<key>`` sorted as strings, the order of the ``optimizer/`` tensors of a
  checkpoint), so that a replay from the committed state is fully determined;
- ``update_norm``: the L2 norm of the rank's weight change made by the step, W_{t+1} - W_t over
  its parameters, written with 9 significant digits (metadata for PoL's top-Q, never a digest).

A checkpoint at step s is consistent with the chain when its weights and optimizer digests equal
the commitment of step s - 1. Both digests can be recomputed from a checkpoint
(`checkpoint_commitment`), from live objects (`live_commitment`) or from an answered state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import hash_regions, shard_digest

__all__ = [
    "StateCommitment",
    "checkpoint_commitment",
    "live_commitment",
    "live_optimizer_tensors",
    "optimizer_digest",
    "round_norm",
    "weights_digest",
]

_FIELDS = frozenset({"rank", "weights", "optimizer", "update_norm"})
_HEX = frozenset("0123456789abcdef")


def round_norm(value: float) -> float:
    """A norm as committed: 9 significant digits, read back as a double."""
    return float(f"{float(value):.9g}")


@dataclass(frozen=True)
class StateCommitment:
    rank: int
    weights: str
    optimizer: str
    update_norm: float

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "weights": self.weights, "optimizer": self.optimizer, "update_norm": self.update_norm}

    @classmethod
    def from_json(cls, obj: Any, where: str = "step commitment") -> StateCommitment:
        if not isinstance(obj, dict) or set(obj) != _FIELDS:
            raise FormatError(f"{where} must have exactly the fields {sorted(_FIELDS)}")
        rank = obj["rank"]
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise FormatError(f"{where}: rank must be a non-negative integer")
        for name in ("weights", "optimizer"):
            v = obj[name]
            if not isinstance(v, str) or len(v) != 64 or not set(v) <= _HEX:
                raise FormatError(f"{where}: {name} must be 64 lowercase hex characters")
        norm = obj["update_norm"]
        if not isinstance(norm, (int, float)) or isinstance(norm, bool) or not math.isfinite(norm) or norm < 0:
            raise FormatError(f"{where}: update_norm must be a finite non-negative number")
        return cls(rank, obj["weights"], obj["optimizer"], float(norm))


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def weights_digest(params: Sequence[torch.Tensor]) -> str:
    """The chip's shard digest over these parameter tensors, in order."""
    return shard_digest(hash_regions([_local(p).detach() for p in params])).hex()


def optimizer_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """Shard digest of optimizer-state tensors named ``<index>/<key>``, in sorted name order."""
    return shard_digest(hash_regions([_local(tensors[k]).detach() for k in sorted(tensors)])).hex()


def live_optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state tensors under their checkpoint names, without
    building a state dict (indices are positions over the param groups, as `state_dict` numbers them)."""
    out: dict[str, torch.Tensor] = {}
    index = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    out[f"{index}/{key}"] = value
            index += 1
    return out


def live_commitment(rank: int, params: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer | None, update_norm: float) -> StateCommitment:
    opt = live_optimizer_tensors(optimizer) if optimizer is not None else {}
    return StateCommitment(rank, weights_digest(params), optimizer_digest(opt), round_norm(update_norm))


def checkpoint_commitment(model: Mapping[str, torch.Tensor], param_names: Sequence[str], optimizer_tensors: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(weights, optimizer) digests of a checkpoint's (or an answered state's) tensors; a
    parameter the state lacks is a FormatError."""
    missing = [n for n in param_names if n not in model]
    if missing:
        raise FormatError(f"the state lacks parameters {missing[:3]}")
    return weights_digest([model[n] for n in param_names]), optimizer_digest(optimizer_tensors)
