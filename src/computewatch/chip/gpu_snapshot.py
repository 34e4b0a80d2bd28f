"""The snapshot path when a chip's shard lives in CUDA memory.

A snapshot stalls the whole training run (every other chip waits for the snapshotting one),
so the chip hashes the shard IN PLACE with the Triton BLAKE3 kernel on one stream while a
second stream copies the same bytes out to pinned host memory in chunks. The hash of an 80 GB
shard takes tens of milliseconds against seconds for the copy over PCIe, so with the two
overlapped the stall approaches the copy time alone; :class:`CudaSnapshot` reports both.

Importable without CUDA (and without Triton); calling it without CUDA raises GpuHashError.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from computewatch.crypto._blake3_errors import GpuHashError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "CudaSnapshot",
    "allocate_pinned",
    "copy_out_only",
    "snapshot_cuda_regions",
]

# 64 MiB per copy: large enough to run the DMA engine at full speed, small enough that the
# first chunks reach the host (and the storage writer) long before the last.
DEFAULT_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class CudaSnapshot:
    """One snapshot of CUDA regions.

    ``digests``: BLAKE3-256 of each region (standard, as the ``blake3`` package computes it).
    ``host``: pinned CPU copies, one per region, same dtype and shape.
    ``stall_s``: wall time of the whole snapshot (hash and copy, until both finished).
    ``copy_only_s``: the copy stream's own elapsed time in this snapshot (CUDA events from the
    first chunk's start to the last chunk's end): what the stall would be with free hashing.
    """

    digests: list[bytes]
    host: list[torch.Tensor]
    stall_s: float
    copy_only_s: float


def _require_cuda(tensors: Sequence[torch.Tensor]) -> torch.device:
    if not torch.cuda.is_available():
        raise GpuHashError("the GPU snapshot path needs CUDA, and no CUDA device is available; "
                           "shards in CPU memory are snapshotted by the chip's CPU path")
    if not len(tensors):
        raise ValueError("a snapshot needs at least one region")
    device = tensors[0].device
    if device.type != "cuda" or any(t.device != device for t in tensors):
        raise ValueError("snapshot_cuda_regions needs every region on one CUDA device, got "
                         f"{sorted({str(t.device) for t in tensors})}")
    return device


def _byte_view(t: torch.Tensor) -> torch.Tensor:
    flat = t.contiguous().reshape(-1)
    return flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)


def _chunks(nbytes: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges of at most ``chunk_bytes`` covering ``nbytes``."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    return [(a, min(a + chunk_bytes, nbytes)) for a in range(0, nbytes, chunk_bytes)]


def allocate_pinned(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Pinned host byte buffers for the regions. Pinning is slow (the OS locks every page),
    so a chip allocates them once and passes them to every snapshot."""
    _require_cuda(tensors)
    return [torch.empty(t.numel() * t.element_size(), dtype=torch.uint8, pin_memory=True)
            for t in tensors]


def _enqueue_copies(views: Sequence[torch.Tensor], host: Sequence[torch.Tensor],
                    chunk_bytes: int) -> None:
    if len(host) != len(views):
        raise ValueError(f"{len(views)} regions but {len(host)} host buffers")
    for src, dst in zip(views, host, strict=True):
        # An empty region's buffer has no memory to pin (is_pinned() is False): nothing to copy.
        if dst.numel() != src.numel() or dst.dtype != torch.uint8 or (src.numel() and not dst.is_pinned()):
            raise ValueError("host buffers must be pinned uint8 tensors of each region's byte size")
        for a, b in _chunks(src.numel(), chunk_bytes):
            dst[a:b].copy_(src[a:b], non_blocking=True)


def _as_regions(host: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [h.view(t.dtype).reshape(t.shape) for h, t in zip(host, tensors, strict=True)]


def snapshot_cuda_regions(tensors: Sequence[torch.Tensor], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                          host: Sequence[torch.Tensor] | None = None) -> CudaSnapshot:
    """Hash ``tensors`` in place and copy them to pinned host memory, overlapped.

    ``host``: buffers from :func:`allocate_pinned` to reuse (otherwise allocated here, and
    the allocation counts in the stall). Work already queued on the current stream (the
    optimizer step that wrote the weights) is waited for first and not counted."""
    device = _require_cuda(tensors)
    _chunks(0, chunk_bytes)  # validate before touching the device
    from computewatch.crypto.blake3_triton import blake3_regions

    with torch.cuda.device(device):
        producer = torch.cuda.current_stream()
        producer.synchronize()
        start = time.perf_counter()
        views = [_byte_view(t) for t in tensors]
        host_bufs = list(host) if host is not None else allocate_pinned(tensors)
        copy_stream = torch.cuda.Stream()
        hash_stream = torch.cuda.Stream()
        copy_stream.wait_stream(producer)
        hash_stream.wait_stream(producer)
        copy_start = torch.cuda.Event(enable_timing=True)
        copy_end = torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(copy_stream):
            copy_start.record()
            # The copies go first: they are the long pole, and non_blocking on pinned memory
            # returns at once, so the hash launches right behind them on its own stream.
            _enqueue_copies(views, host_bufs, chunk_bytes)
            copy_end.record()
        with torch.cuda.stream(hash_stream):
            digests = blake3_regions(views)  # returns once the digests are on the host
        copy_end.synchronize()
        stall = time.perf_counter() - start  # both streams are done: the views may go
    return CudaSnapshot(digests=digests, host=_as_regions(host_bufs, tensors), stall_s=stall,
                        copy_only_s=copy_start.elapsed_time(copy_end) / 1000.0)


def copy_out_only(tensors: Sequence[torch.Tensor], host: Sequence[torch.Tensor], *,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> float:
    """Seconds to copy the regions to ``host`` with the same chunking and no hashing: the
    baseline the snapshot stall is judged against."""
    device = _require_cuda(tensors)
    with torch.cuda.device(device):
        torch.cuda.current_stream().synchronize()
        start = time.perf_counter()
        views = [_byte_view(t) for t in tensors]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            _enqueue_copies(views, host, chunk_bytes)
        stream.synchronize()
        return time.perf_counter() - start
