"""Checkpoints 𝕎: model, optimizer, scheduler and RNG state of one chip, as content-addressed safetensors.

A checkpoint at step s holds W_s (the weights after s optimizer steps) as the rank holds them
(the whole model for one process or DDP, the rank's shard for FSDP) plus everything needed to
continue exactly (PoL needs the optimizer state too, fn 19). Tensors, named:

- ``model/<state-dict key>``: the module's parameters and buffers (local shard under FSDP);
- ``optimizer/<param index>/<key>``: optimizer state tensors (``exp_avg``, ``step``, ...);
- ``rng/torch``: torch's CPU RNG state (uint8).

Non-tensor state travels in the safetensors header metadata under the key ``computewatch``, as
canonical JSON: ``{"v": 1, "format": "computewatch/checkpoint", "step", "rank", "world_size",
"optimizer": {"param_groups": [...], "state": {index: {key: value}}}, "scheduler": {...} | null}``.
The file is written by this module rather than by the safetensors library so that the bytes
are canonical (header = canonical JSON, tensors in name order, no padding beyond the 8-byte
header alignment the format asks for): two bit-identical states give the same digest. Any
safetensors reader loads it.

`CheckpointIndex` lists a rank's committed checkpoints (``checkpoints/rank-<r>.json``, rewritten
atomically after the object is durable).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import safetensors.torch
import torch

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import dtype_name, tensor_memory
from computewatch.formats.storage import ObjectStore, RunStorage, StoreError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointIndex",
    "capture",
    "decode_checkpoint",
    "encode_checkpoint",
    "encode_safetensors",
    "restore",
]

CHECKPOINT_FORMAT = "computewatch/checkpoint"
_META_KEY = "computewatch"
_META_FIELDS = frozenset({"v", "format", "step", "rank", "world_size", "optimizer", "scheduler"})
_HEX = frozenset("0123456789abcdef")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _local(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 keeps parameters and optimizer state as DTensors; a chip holds only the local shard.
    return t.to_local() if hasattr(t, "to_local") else t


@dataclass
class Checkpoint:
    step: int
    rank: int
    world_size: int
    model: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer_meta: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {
            "v": 1,
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "rank": self.rank,
            "world_size": self.world_size,
            "optimizer": self.optimizer_meta,
            "scheduler": self.scheduler,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model/{k}": v for k, v in self.model.items()}
        out.update({f"optimizer/{k}": v for k, v in self.optimizer_tensors.items()})
        out.update({f"rng/{k}": v for k, v in self.rng.items()})
        return out


def _jsonable(obj: Any, where: str) -> Any:
    if isinstance(obj, tuple):
        obj = list(obj)
    if isinstance(obj, list):
        return [_jsonable(v, where) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, where) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        raise FormatError(f"checkpoint: {where} holds a tensor where plain values were expected")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise FormatError(f"checkpoint: {where} holds a {type(obj).__name__}, which cannot be recorded")


def capture(
    step: int,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Checkpoint:
    """Copy the state at this step boundary to fresh CPU tensors (the only part on the critical path)."""
    model = {k: _local(v).detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_meta: dict[str, Any] = {"param_groups": [], "state": {}}
    if optimizer is not None:
        sd = optimizer.state_dict()
        opt_meta["param_groups"] = _jsonable(sd["param_groups"], "optimizer param_groups")
        for idx, state in sd["state"].items():
            plain = {}
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    opt_tensors[f"{idx}/{key}"] = _local(value).detach().to("cpu", copy=True)
                else:
                    plain[key] = _jsonable(value, f"optimizer state {idx}/{key}")
            opt_meta["state"][str(idx)] = plain
    sched = _jsonable(scheduler.state_dict(), "scheduler state") if scheduler is not None else None
    return Checkpoint(step, rank, world_size, model, opt_tensors, opt_meta, sched, {"torch": torch.get_rng_state()})


def restore(
    ckpt: Checkpoint,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    *,
    restore_rng: bool = True,
    settings: str = "checkpoint",
) -> None:
    """Load a checkpoint into live objects in place (parameters keep their storage).

    ``settings="checkpoint"`` (resuming a run) also takes the optimizer's param-group settings
    (learning rate, betas, ...) and the scheduler state from the checkpoint. ``settings="live"``
    (a Verifier's replay) loads only the per-parameter optimizer state (moments, step counts)
    and keeps the live optimizer's settings and scheduler, which come from the precommitment.
    """
    if settings not in ("checkpoint", "live"):
        raise ValueError(f"settings must be 'checkpoint' or 'live', got {settings!r}")
    live = module.state_dict()
    if set(live) != set(ckpt.model):
        raise FormatError(
            f"checkpoint step {ckpt.step}: model keys differ (missing {sorted(set(live) - set(ckpt.model))}, "
            f"unexpected {sorted(set(ckpt.model) - set(live))})"
        )
    with torch.no_grad():
        for key, target in live.items():
            local = _local(target)
            if local.shape != ckpt.model[key].shape:
                raise FormatError(f"checkpoint step {ckpt.step}: {key} has shape {list(ckpt.model[key].shape)}, model has {list(local.shape)}")
            local.copy_(ckpt.model[key])
    try:
        if optimizer is not None:
            _restore_optimizer(ckpt, optimizer, keep_settings=settings == "live")
        if settings == "checkpoint" and scheduler is not None and ckpt.scheduler is not None:
            scheduler.load_state_dict(dict(ckpt.scheduler))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # torch's own errors on a state that does not fit
        raise FormatError(f"checkpoint step {ckpt.step}: optimizer or scheduler state does not fit the live objects ({exc})") from None
    if restore_rng and "torch" in ckpt.rng:
        torch.set_rng_state(ckpt.rng["torch"])


def _restore_optimizer(ckpt: Checkpoint, optimizer: torch.optim.Optimizer, *, keep_settings: bool = False) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict[str, Any]] = {}
    for idx_text, plain in ckpt.optimizer_meta.get("state", {}).items():
        state[int(idx_text)] = dict(plain)
    for name, tensor in ckpt.optimizer_tensors.items():
        idx_text, key = name.split("/", 1)
        idx = int(idx_text)
        if not 0 <= idx < len(params):
            raise FormatError(f"checkpoint step {ckpt.step}: optimizer state for parameter {idx}, optimizer has {len(params)}")
        state.setdefault(idx, {})[key] = _like_param(params[idx], tensor)
    groups = optimizer.state_dict()["param_groups"] if keep_settings else ckpt.optimizer_meta["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _like_param(param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    # Per-element optimizer state of a sharded parameter must be a DTensor placed like it.
    if hasattr(param, "to_local") and local.shape == param.to_local().shape:
        from torch.distributed.tensor import DTensor

        dparam = cast(DTensor, param)  # it has to_local: a DTensor
        return DTensor.from_local(local.clone(), dparam.device_mesh, dparam.placements, run_check=False, shape=param.shape, stride=param.stride())
    return local.clone()


def encode_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Canonical safetensors bytes: canonical-JSON header, tensors in name order, packed."""
    entries: dict[str, Any] = {}
    views = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        view = tensor_memory(t)
        entries[name] = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data_offsets": [offset, offset + view.nbytes]}
        offset += view.nbytes
        views.append(view)
    entries["__metadata__"] = dict(metadata)
    header = canonical_json(entries)
    header += b" " * (-len(header) % 8)  # the format aligns the data section to 8 bytes
    return b"".join([struct.pack("<Q", len(header)), header, *views])


def encode_checkpoint(ckpt: Checkpoint) -> bytes:
    return encode_safetensors(ckpt.tensors(), {_META_KEY: canonical_json(ckpt.meta()).decode("utf-8")})


def _header(data: bytes, what: str) -> dict[str, Any]:
    if len(data) < 8:
        raise FormatError(f"{what}: {len(data)} bytes is too short for a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise FormatError(f"{what}: header length {size} exceeds the file ({len(data)} bytes); truncated?")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError as exc:
        raise FormatError(f"{what}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{what}: header is not a JSON object")
    return header


def decode_checkpoint(data: bytes, *, what: str = "checkpoint") -> Checkpoint:
    """Parse and validate checkpoint bytes (FormatError naming the problem otherwise)."""
    header = _header(data, what)
    meta_text = header.get("__metadata__", {}).get(_META_KEY) if isinstance(header.get("__metadata__"), dict) else None
    if not isinstance(meta_text, str):
        raise FormatError(f"{what}: no {_META_KEY!r} metadata; not a computewatch checkpoint")
    meta = parse_canonical_json(meta_text.encode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or meta.get("v") != 1:
        raise FormatError(f"{what}: metadata is not a v1 {CHECKPOINT_FORMAT}")
    opt = meta.get("optimizer")
    if (
        set(meta) != _META_FIELDS
        or not all(_count(meta[k]) for k in ("step", "rank", "world_size"))
        or not isinstance(opt, dict)
        or set(opt) != {"param_groups", "state"}
        or not isinstance(opt["param_groups"], list)
        or not isinstance(opt["state"], dict)
        or not (meta["scheduler"] is None or isinstance(meta["scheduler"], dict))
    ):
        raise FormatError(f"{what}: metadata must have exactly the fields {sorted(_META_FIELDS)}, well typed")
    try:
        tensors = safetensors.torch.load(bytes(data))
    except Exception as exc:  # the library raises its own error types on malformed buffers
        raise FormatError(f"{what}: safetensors payload is malformed ({exc})") from None
    ckpt = Checkpoint(meta["step"], meta["rank"], meta["world_size"], {}, {}, meta["optimizer"], meta["scheduler"], {})
    for name, tensor in tensors.items():
        kind, _, rest = name.partition("/")
        target = {"model": ckpt.model, "optimizer": ckpt.optimizer_tensors, "rng": ckpt.rng}.get(kind)
        if target is None or not rest:
            raise FormatError(f"{what}: unexpected tensor name {name!r}")
        target[rest] = tensor
    return ckpt


class CheckpointIndex:
    """A rank's committed checkpoints: ``checkpoints/rank-<r>.json``, rewritten atomically."""

    def __init__(self, storage: RunStorage, rank: int) -> None:
        self.storage = storage
        self.rank = rank
        self.rel = f"checkpoints/rank-{rank:05d}.json"

    def entries(self) -> list[dict[str, Any]]:
        if not self.storage.exists(self.rel):
            return []
        try:
            doc = parse_canonical_json(self.storage.read(self.rel))
        except FormatError as exc:
            raise StoreError(f"checkpoint index {self.storage.path(self.rel)} is malformed: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("rank") != self.rank or not isinstance(doc.get("checkpoints"), list):
            raise StoreError(f"checkpoint index {self.storage.path(self.rel)} is not the v1 index of rank {self.rank}")
        entries = doc["checkpoints"]
        prev = -1
        for e in entries:
            ok = isinstance(e, dict) and set(e) == {"step", "digest", "nbytes"} and _count(e["step"]) and _count(e["nbytes"])
            if not ok or not isinstance(e["digest"], str) or len(e["digest"]) != 64 or not set(e["digest"]) <= _HEX:
                raise StoreError(f"checkpoint index {self.storage.path(self.rel)}: malformed entry {e!r}")
            if e["step"] <= prev:
                raise StoreError(f"checkpoint index {self.storage.path(self.rel)}: steps are not increasing at step {e['step']}")
            prev = e["step"]
        return entries

    def add(self, step: int, digest: str, nbytes: int) -> None:
        entries = [e for e in self.entries() if e["step"] != step]
        entries.append({"step": step, "digest": digest, "nbytes": nbytes})
        entries.sort(key=lambda e: e["step"])
        self._write(entries)

    def truncate(self, last_step: int) -> None:
        self._write([e for e in self.entries() if e["step"] <= last_step])

    def _write(self, entries: list[dict[str, Any]]) -> None:
        self.storage.write_atomic(self.rel, canonical_json({"v": 1, "rank": self.rank, "checkpoints": entries}))

    def load(self, store: ObjectStore, step: int) -> Checkpoint:
        for e in self.entries():
            if e["step"] == step:
                ckpt = decode_checkpoint(store.get(e["digest"]), what=f"checkpoint {e['digest']} (rank {self.rank}, step {step})")
                if ckpt.step != step or ckpt.rank != self.rank:
                    raise StoreError(f"checkpoint {e['digest']} says step {ckpt.step} rank {ckpt.rank}, index says step {step} rank {self.rank}")
                return ckpt
        raise StoreError(f"rank {self.rank} has no checkpoint at step {step}")
