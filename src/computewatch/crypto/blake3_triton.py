"""Standard BLAKE3-256 of tensors in device memory, computed in place by Triton kernels.

Digests are bit-identical to the ``blake3`` package's on the same bytes (little-endian, C
order): any length, including empty inputs, partial chunks and chunk counts that are not a
power of two. Many regions go through ONE launch per kernel (the launch overhead would
otherwise dominate a shard of many small tensors).

* :func:`blake3_regions` - the public entry: a sequence of tensors on one device. On CUDA the
  tensors are read where they lie: the kernels get one base pointer and int64 word offsets
  computed from ``data_ptr()`` differences, so nothing is copied (except a region whose start
  is not 4-byte aligned, which is cloned once: the kernels read 32-bit words).
* :func:`blake3_flat` - the lower level: regions given as byte offsets and lengths into one
  flat ``uint8`` buffer. The tests drive it on CPU tensors under Triton's interpreter
  (``TRITON_INTERPRET=1`` set before Triton is imported), which runs the same kernel code.

Without CUDA and without the interpreter the kernels cannot run; CPU tensors belong to
:mod:`computewatch.crypto.hashing`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from computewatch.crypto import _blake3_kernels as _k
from computewatch.crypto._blake3_errors import GpuHashError
from computewatch.crypto._blake3_plan import _Plan, build_plan

__all__ = [
    "DEFAULT_CONFIG",
    "GpuHashError",
    "KernelConfig",
    "blake3_flat",
    "blake3_regions",
    "gpu_available",
    "interpreted",
]


@dataclass(frozen=True)
class KernelConfig:
    """Launch shape of the kernels; every choice gives the same digests.

    ``chunk_tile`` chunks per program of the chunk kernel (one lane each), ``chunk_warps`` its
    warps; ``quads``: each lane loads its block as four 16-byte pieces (split in registers)
    rather than as part of a coalesced ``[tile, 16]`` tile (split through shared memory);
    ``fma_adds``: additions issued on the FMA pipe. The benchmark sweeps these."""

    chunk_tile: int = 64
    chunk_warps: int = 2
    tail_tile: int = 32
    parent_tile: int = 64
    parent_warps: int = 2
    quads: bool = True
    fma_adds: bool = True

    def __post_init__(self) -> None:
        for name in ("chunk_tile", "tail_tile", "parent_tile"):
            value = getattr(self, name)
            if value < 2 or value & (value - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= 2, got {value}")


DEFAULT_CONFIG = KernelConfig()

_PLAN_CACHE_SIZE = 16
# A shard's layout repeats snapshot after snapshot: keep its plan and device table.
_plan_cache: OrderedDict[tuple, tuple[_Plan, torch.Tensor]] = OrderedDict()


def interpreted() -> bool:
    """True when the kernels were built by Triton's interpreter (TRITON_INTERPRET=1 was set
    before this module was first imported), so they run on CPU tensors."""
    return type(_k._chunk_kernel).__name__ == "InterpretedFunction"


def gpu_available() -> bool:
    """True when CUDA is usable and the kernels are compiled (not interpreted)."""
    return torch.cuda.is_available() and not interpreted()


class _RawPointer:
    """A device address Triton accepts as a pointer argument (it reads ``data_ptr`` and
    ``dtype``): the base that all regions' offsets are relative to."""

    def __init__(self, address: int) -> None:
        self._address = address
        self.dtype = torch.uint8

    def data_ptr(self) -> int:
        return self._address


def _check_device(device: torch.device) -> None:
    if device.type == "cuda":
        if interpreted():
            raise GpuHashError("the GPU BLAKE3 kernels were loaded in interpreter mode (TRITON_INTERPRET=1); "
                               "they cannot run on CUDA tensors in this process")
        return
    if device.type == "cpu" and interpreted():
        return
    raise GpuHashError(
        f"the GPU BLAKE3 kernel needs CUDA tensors (got device {device}); CPU tensors are hashed by "
        "computewatch.crypto.hashing, or run these kernels on CPU under TRITON_INTERPRET=1")


def _get_plan(word_off: np.ndarray, lengths: np.ndarray, device: torch.device,
              config: KernelConfig) -> tuple[_Plan, torch.Tensor]:
    key = (device, config, word_off.tobytes(), lengths.tobytes())
    hit = _plan_cache.get(key)
    if hit is not None:
        _plan_cache.move_to_end(key)
        return hit
    plan = build_plan(word_off, lengths, chunk_tile=config.chunk_tile, tail_tile=config.tail_tile,
                      parent_tile=config.parent_tile)
    table = torch.from_numpy(plan.table).to(device)
    _plan_cache[key] = (plan, table)
    if len(_plan_cache) > _PLAN_CACHE_SIZE:
        _plan_cache.popitem(last=False)
    return plan, table


def _launch(base: object, word_off: np.ndarray, lengths: np.ndarray, device: torch.device,
            config: KernelConfig) -> torch.Tensor:
    """Enqueue every launch; returns the ``[n_regions, 8]`` int32 root words (on device)."""
    plan, table = _get_plan(word_off, lengths, device, config)
    n = plan.n_regions

    def t(at: int, size: int = n) -> torch.Tensor:
        return table[at:at + size]

    buf0 = torch.empty((plan.buf0_rows, 8), dtype=torch.int32, device=device)
    buf1 = torch.empty((plan.buf1_rows, 8), dtype=torch.int32, device=device)
    bases = (t(plan.base0_at), t(plan.base1_at))
    bufs = (buf0, buf1)
    fma = config.fma_adds
    if plan.chunk_grid:
        _k._chunk_kernel[(plan.chunk_grid,)](
            base, t(plan.word_off_at), bases[0], t(plan.main_prefix_at, n + 1), buf0,
            n, plan.search_steps, plan.total_main, 1,
            TILE=config.chunk_tile, ALIGN16=bool(np.all(word_off % 4 == 0)), FMA_ADDS=fma,
            QUADS=config.quads, num_warps=config.chunk_warps)
    _k._tail_kernel[(plan.tail_grid,)](
        base, t(plan.word_off_at), t(plan.len_at), t(plan.nchunks_at), bases[0], buf0, n,
        plan.tail_blocks, 1, TILE=config.tail_tile, FMA_ADDS=fma, num_warps=1)
    for level in plan.levels:
        src, dst = level.src, 1 - level.src
        _k._parent_kernel[(level.grid,)](
            bufs[src], bufs[dst], bases[src], bases[dst], t(level.nodes_at),
            t(level.prefix_at, n + 1), n, plan.search_steps, level.total, 1,
            TILE=config.parent_tile, FMA_ADDS=fma, num_warps=config.parent_warps)
    in0 = buf0.index_select(0, t(plan.root_row0_at))
    in1 = buf1.index_select(0, t(plan.root_row1_at))
    return torch.where(t(plan.root_parity_at)[:, None] == 1, in1, in0)


def _digests(roots: torch.Tensor) -> list[bytes]:
    words = roots.cpu().numpy().astype("<i4", copy=False)
    return [words[i].tobytes() for i in range(words.shape[0])]


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat uint8 view (C order); a non-contiguous tensor is copied."""
    flat = t.contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat


def _hash_packed(views: Sequence[torch.Tensor], config: KernelConfig) -> list[bytes]:
    """Copy the regions into one 16-byte-aligned flat buffer and hash that (the interpreter
    path of :func:`blake3_regions`, and the fallback for misaligned :func:`blake3_flat` input)."""
    offsets, pos = [], 0
    for v in views:
        offsets.append(pos)
        pos += -(-v.numel() // 16) * 16
    device = views[0].device
    packed = torch.zeros(max(pos, 16), dtype=torch.uint8, device=device)
    for off, v in zip(offsets, views, strict=True):
        packed[off:off + v.numel()] = v
    return blake3_flat(packed, offsets, [v.numel() for v in views], config=config)


def blake3_flat(buffer: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int], *,
                config: KernelConfig | None = None) -> list[bytes]:
    """BLAKE3-256 of ``buffer[offsets[i] : offsets[i] + lengths[i]]`` for every i, in one
    launch per kernel. ``buffer`` is a contiguous 1-D ``uint8`` tensor (CUDA, or CPU under the
    interpreter); regions may overlap and appear in any order."""
    config = config or DEFAULT_CONFIG
    if buffer.dtype != torch.uint8 or buffer.dim() != 1 or not buffer.is_contiguous():
        raise ValueError("blake3_flat needs a contiguous 1-D uint8 buffer")
    if len(offsets) != len(lengths):
        raise ValueError(f"{len(offsets)} offsets but {len(lengths)} lengths")
    off = np.asarray(offsets, dtype=np.int64).reshape(-1)
    size = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if (off < 0).any() or (size < 0).any() or (off + size > buffer.numel()).any():
        raise ValueError(f"a region lies outside the buffer of {buffer.numel()} bytes")
    _check_device(buffer.device)
    if not off.size:
        return []
    addr = buffer.data_ptr() + off
    if ((addr % 4) != 0).any():
        # The kernels read 32-bit words: regions that do not start on a word get a packed copy.
        return _hash_packed([buffer[o:o + n] for o, n in zip(off.tolist(), size.tolist(), strict=True)], config)
    if buffer.device.type == "cuda":
        base_addr = buffer.data_ptr() & ~15
        with torch.cuda.device(buffer.device):
            roots = _launch(_RawPointer(base_addr), (addr - base_addr) // 4, size, buffer.device, config)
            return _digests(roots)
    if buffer.data_ptr() % 4:
        return _hash_packed([buffer[o:o + n] for o, n in zip(off.tolist(), size.tolist(), strict=True)], config)
    return _digests(_launch(buffer, off // 4, size, buffer.device, config))


def _word_offsets(views: Sequence[torch.Tensor], base_addr: int) -> np.ndarray:
    """Each region's start as int32 words from ``base_addr`` (empty regions: 0, never read)."""
    offsets = [(v.data_ptr() - base_addr) if v.numel() else 0 for v in views]
    if any(o < 0 or o % 4 for o in offsets):
        raise ValueError("every region must start on a 32-bit word at or after the base")
    return np.array(offsets, dtype=np.int64) // 4


def blake3_regions(tensors: Sequence[torch.Tensor], *, config: KernelConfig | None = None) -> list[bytes]:
    """BLAKE3-256 of each tensor's bytes (any dtype; little-endian, C order), all in one launch
    per kernel. CUDA tensors are hashed where they lie; all tensors must share one device."""
    config = config or DEFAULT_CONFIG
    if not len(tensors):
        return []
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        raise ValueError("blake3_regions needs all tensors on one device")
    _check_device(device)
    # The kernels read 32-bit words: a view not starting on one is cloned (fresh allocations
    # are aligned) and the clone kept alive, in ``views``, until the digests are back.
    views = [v if v.data_ptr() % 4 == 0 else v.clone() for v in map(_as_bytes, tensors)]
    size = np.array([v.numel() for v in views], dtype=np.int64)
    storages = {v.untyped_storage().data_ptr() for v in views if v.numel()}
    if device.type == "cuda":
        # One base below every region: the lowest storage start, aligned down to 16 bytes
        # (still inside that allocation, so the driver accepts it as a device pointer).
        base_addr = min(storages, default=0) & ~15
        with torch.cuda.device(device):
            roots = _launch(_RawPointer(base_addr), _word_offsets(views, base_addr), size, device, config)
            return _digests(roots)
    # The interpreter needs a real tensor as the base: views of one storage share it (the same
    # offset arithmetic as on CUDA); separate CPU allocations are packed into one buffer.
    live = [v for v in views if v.numel()]
    if len(storages) != 1 or live[0].untyped_storage().data_ptr() % 4:
        return _hash_packed(views, config)
    base = torch.empty(0, dtype=torch.uint8).set_(live[0].untyped_storage())
    return _digests(_launch(base, _word_offsets(views, base.data_ptr()), size, device, config))
