"""Shard layout: which part of which parameter each chip holds, in the order the chip hashes it.

A Verifier holding a chip's logged snapshot needs two operations, both defined here:
`reassemble` (full weights from every rank's shard) and `slice_shard` (the exact tensors one
chip held, cut out of full weights, so `hash_regions` over them reproduces the logged digest).

Format (canonical JSON, docs/formats.md)::

    {"v": 1, "strategy": "single" | "ddp" | "fsdp", "world_size": W,
     "params": [{"name": "fc.weight", "shape": [7, 5], "dtype": "F32"}, ...],
     "chips": [{"rank": 0, "regions": [
         {"param": "fc.weight", "start": 0, "stop": 20, "shape": [4, 5]}, ...]}, ...]}

A region is the slice ``full[param].reshape(-1)[start:stop]`` viewed with ``shape`` (its dtype
is the parameter's). Regions of one chip are listed in the chip's memory order, which is the
order of `hash_regions`. ``single``/``ddp``: every chip holds every parameter whole. ``fsdp``:
each parameter is split along dim 0 like ``torch.chunk`` (chunk = ceil(rows / W); rank r holds
rows [r*chunk, min((r+1)*chunk, rows)), possibly none), which is FSDP2's ``Shard(0)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import dtype_name

__all__ = ["LAYOUT_VERSION", "STRATEGIES", "ParamSpec", "ShardLayout", "ShardRegion"]

LAYOUT_VERSION = 1
STRATEGIES = ("single", "ddp", "fsdp")
_TORCH_DTYPES = {dtype_name(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool)}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ShardRegion:
    param: str
    start: int
    stop: int
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"param": self.param, "start": self.start, "stop": self.stop, "shape": list(self.shape)}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so that equality is bit for bit (NaN payloads, -0.0 and 0.0 differ)."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"shard layout: {what} must be a non-negative integer, got {value!r}")
    return value


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise FormatError(f"shard layout: {what} must be a list")
    return tuple(_int(d, what) for d in value)


def _fields(obj: Any, expected: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != expected:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(f"shard layout: {what} must have exactly the fields {sorted(expected)}, got {got}")
    return obj


@dataclass(frozen=True)
class ShardLayout:
    strategy: str
    world_size: int
    params: tuple[ParamSpec, ...]
    chips: tuple[tuple[ShardRegion, ...], ...]  # indexed by rank

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise FormatError(f"shard layout: unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.world_size < 1 or len(self.chips) != self.world_size:
            raise FormatError(f"shard layout: {len(self.chips)} chips listed for world size {self.world_size}")
        specs = {p.name: p for p in self.params}
        if len(specs) != len(self.params):
            raise FormatError("shard layout: duplicate parameter names")
        for rank, regions in enumerate(self.chips):
            for reg in regions:
                spec = specs.get(reg.param)
                if spec is None:
                    raise FormatError(f"shard layout: rank {rank} holds unknown parameter {reg.param!r}")
                if not 0 <= reg.start <= reg.stop <= spec.numel or math.prod(reg.shape) != reg.stop - reg.start:
                    raise FormatError(
                        f"shard layout: rank {rank} region of {reg.param!r} [{reg.start}, {reg.stop}) with shape "
                        f"{list(reg.shape)} does not fit the parameter's {spec.numel} elements"
                    )

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def replicated(cls, params: Sequence[tuple[str, torch.Tensor]], world_size: int = 1, strategy: str = "single") -> ShardLayout:
        """Every chip holds every parameter whole (one process, or DDP replicas)."""
        specs = tuple(ParamSpec(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in params)
        regions = tuple(ShardRegion(s.name, 0, s.numel, s.shape) for s in specs)
        return cls(strategy, world_size, specs, tuple(regions for _ in range(world_size)))

    @classmethod
    def dim0_sharded(cls, params: Sequence[tuple[str, tuple[int, ...], str]], world_size: int) -> ShardLayout:
        """FSDP2-style: each (name, global shape, dtype) split along dim 0 like torch.chunk."""
        specs = tuple(ParamSpec(n, tuple(shape), dt) for n, shape, dt in params)
        chips = []
        for rank in range(world_size):
            regions = []
            for spec in specs:
                rows = spec.shape[0] if spec.shape else 1
                row = spec.numel // rows if rows else 0
                chunk = -(-rows // world_size)
                lo, hi = min(rank * chunk, rows), min((rank + 1) * chunk, rows)
                local_shape = (hi - lo, *spec.shape[1:]) if spec.shape else ((1,) if hi > lo else (0,))
                regions.append(ShardRegion(spec.name, lo * row, hi * row, local_shape))
            chips.append(tuple(regions))
        return cls("fsdp", world_size, specs, tuple(chips))

    # ---- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "v": LAYOUT_VERSION,
            "strategy": self.strategy,
            "world_size": self.world_size,
            "params": [p.to_json() for p in self.params],
            "chips": [{"rank": r, "regions": [reg.to_json() for reg in regs]} for r, regs in enumerate(self.chips)],
        }

    @classmethod
    def from_json(cls, obj: Any) -> ShardLayout:
        doc = _fields(obj, {"v", "strategy", "world_size", "params", "chips"}, "layout")
        if doc["v"] != LAYOUT_VERSION:
            raise FormatError(f"shard layout: unsupported version {doc['v']!r}")
        if not isinstance(doc["params"], list) or not isinstance(doc["chips"], list):
            raise FormatError("shard layout: params and chips must be lists")
        params = []
        for p in doc["params"]:
            p = _fields(p, {"name", "shape", "dtype"}, "param")
            if not isinstance(p["name"], str) or p["dtype"] not in _TORCH_DTYPES:
                raise FormatError(f"shard layout: bad parameter entry {p!r}")
            params.append(ParamSpec(p["name"], _shape(p["shape"], "param shape"), p["dtype"]))
        chips = []
        for rank, chip in enumerate(doc["chips"]):
            chip = _fields(chip, {"rank", "regions"}, "chip")
            if chip["rank"] != rank or not isinstance(chip["regions"], list):
                raise FormatError(f"shard layout: chip entries must be listed by rank (entry {rank} says {chip['rank']!r})")
            regions = []
            for reg in chip["regions"]:
                reg = _fields(reg, {"param", "start", "stop", "shape"}, "region")
                if not isinstance(reg["param"], str):
                    raise FormatError("shard layout: region param must be a string")
                regions.append(
                    ShardRegion(reg["param"], _int(reg["start"], "start"), _int(reg["stop"], "stop"), _shape(reg["shape"], "region shape"))
                )
            chips.append(tuple(regions))
        return cls(doc["strategy"], _int(doc["world_size"], "world_size"), tuple(params), tuple(chips))

    # ---- what the Verifier uses ---------------------------------------------------------------
    def spec(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise FormatError(f"shard layout: no parameter named {name!r}")

    def memory_map(self, rank: int) -> dict[str, Any]:
        """What chip `rank` logs: its regions bound to parameter names, in memory order."""
        self._check_rank(rank)
        return {
            "v": LAYOUT_VERSION,
            "rank": rank,
            "world_size": self.world_size,
            "strategy": self.strategy,
            "regions": [dict(reg.to_json(), dtype=self.spec(reg.param).dtype) for reg in self.chips[rank]],
        }

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.world_size:
            raise FormatError(f"shard layout: rank {rank} outside 0..{self.world_size - 1}")

    def slice_shard(self, full: Mapping[str, torch.Tensor], rank: int) -> list[torch.Tensor]:
        """The tensors chip `rank` holds, cut from full weights, in its memory order."""
        self._check_rank(rank)
        out = []
        for reg in self.chips[rank]:
            spec = self.spec(reg.param)
            if reg.param not in full:
                raise FormatError(f"full weights lack parameter {reg.param!r}")
            tensor = full[reg.param]
            if tuple(tensor.shape) != spec.shape or dtype_name(tensor.dtype) != spec.dtype:
                raise FormatError(
                    f"parameter {reg.param!r}: got shape {list(tensor.shape)} {dtype_name(tensor.dtype)}, "
                    f"layout says {list(spec.shape)} {spec.dtype}"
                )
            out.append(tensor.detach().reshape(-1)[reg.start : reg.stop].reshape(reg.shape).contiguous())
        return out

    def reassemble(self, shards: Mapping[int, Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Full weights from every rank's shard tensors (each list in that rank's memory order).

        Every element must be covered; where chips hold copies of the same element (replicas)
        they must agree bit for bit, otherwise the shards cannot come from one set of weights.
        """
        full = {p.name: torch.empty(p.numel, dtype=_TORCH_DTYPES[p.dtype]) for p in self.params}
        covered = {p.name: torch.zeros(p.numel, dtype=torch.bool) for p in self.params}
        for rank in range(self.world_size):
            if rank not in shards:
                raise FormatError(f"reassemble: shard of rank {rank} is missing")
            tensors = list(shards[rank])
            regions = self.chips[rank]
            if len(tensors) != len(regions):
                raise FormatError(f"reassemble: rank {rank} has {len(tensors)} tensors, layout lists {len(regions)} regions")
            for reg, tensor in zip(regions, tensors, strict=True):
                if tuple(tensor.shape) != reg.shape or tensor.dtype != full[reg.param].dtype:
                    raise FormatError(
                        f"reassemble: rank {rank} {reg.param!r} is {list(tensor.shape)} {dtype_name(tensor.dtype)}, "
                        f"layout says {list(reg.shape)} {self.spec(reg.param).dtype}"
                    )
                flat = tensor.detach().reshape(-1)
                seen = covered[reg.param][reg.start : reg.stop]
                target = full[reg.param][reg.start : reg.stop]
                if seen.any() and not torch.equal(_bits(target[seen]), _bits(flat[seen])):
                    raise FormatError(f"reassemble: replicas of {reg.param!r} disagree (rank {rank})")
                target.copy_(flat)
                seen.fill_(True)
        for name, mask in covered.items():
            if not bool(mask.all()):
                raise FormatError(f"reassemble: {int((~mask).sum())} elements of {name!r} are held by no chip")
        return {p.name: full[p.name].reshape(p.shape) for p in self.params}
