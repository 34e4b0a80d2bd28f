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

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import blake3 as _blake3
import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import SHARD_HASH, SHARD_VERSION, dtype_name, hash_regions, shard_digest, tensor_memory

__all__ = [
    "ShardHasher",
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


def live_commitment(
    rank: int,
    params: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    update_norm: float,
    hashers: tuple[ShardHasher, ShardHasher] | None = None,
) -> StateCommitment:
    """The commitment of live state; `hashers` (weights, optimizer) make repeated calls cheap."""
    opt = live_optimizer_tensors(optimizer) if optimizer is not None else {}
    if hashers is None:
        return StateCommitment(rank, weights_digest(params), optimizer_digest(opt), round_norm(update_norm))
    weights = hashers[0].digest(params)
    state = hashers[1].digest([opt[k] for k in sorted(opt)])
    return StateCommitment(rank, weights, state, round_norm(update_norm))


def checkpoint_commitment(model: Mapping[str, torch.Tensor], param_names: Sequence[str], optimizer_tensors: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(weights, optimizer) digests of a checkpoint's (or an answered state's) tensors; a
    parameter the state lacks is a FormatError."""
    missing = [n for n in param_names if n not in model]
    if missing:
        raise FormatError(f"the state lacks parameters {missing[:3]}")
    return weights_digest([model[n] for n in param_names]), optimizer_digest(optimizer_tensors)


class ShardHasher:
    """`shard_digest(hash_regions(tensors))` for tensors hashed again and again in place (every
    step): the regions' offsets, dtypes and shapes and the memory views are prepared once, so a
    digest costs one BLAKE3 call per tensor plus one over the region list, with no per-region
    Python objects. The preparation is redone whenever a tensor's storage moved or its size
    changed. CPU tensors only (a CUDA state goes through `hash_regions`, i.e. the GPU kernel)."""

    def __init__(self) -> None:
        self._key: tuple[tuple[int, int, Any], ...] | None = None
        self._views: list[Any] = []
        self._pieces: list[str] = []

    def digest(self, tensors: Sequence[torch.Tensor]) -> str:
        key = tuple((t.data_ptr(), t.numel(), t.dtype) for t in map(_local, tensors))
        if key != self._key:
            local = [_local(t).detach() for t in tensors]
            if any(t.device.type != "cpu" or not t.is_contiguous() for t in local):
                return shard_digest(hash_regions(local)).hex()
            self._prepare(local)
            self._key = key
        pieces = self._pieces
        parts = [pieces[0]]
        for view, piece in zip(self._views, pieces[1:], strict=True):
            parts.append(_blake3.blake3(view, max_threads=1).hexdigest())
            parts.append(piece)
        return _blake3.blake3("".join(parts).encode()).hexdigest()

    def _prepare(self, tensors: Sequence[torch.Tensor]) -> None:
        # The canonical JSON of the region list with a placeholder for each digest: keys sorted,
        # no spaces, only ASCII strings and integers, so json.dumps writes the canonical bytes.
        marker = "\x00DIGEST\x00"
        regions, offset = [], 0
        for t in tensors:
            nbytes = t.numel() * t.element_size()
            regions.append({"digest": marker, "dtype": dtype_name(t.dtype), "nbytes": nbytes, "offset": offset, "shape": list(t.shape)})
            offset += nbytes
        text = json.dumps({"hash": SHARD_HASH, "regions": regions, "v": SHARD_VERSION}, separators=(",", ":"), sort_keys=True)
        self._pieces = text.split(json.dumps(marker)[1:-1])
        self._views = [tensor_memory(t) for t in tensors]
