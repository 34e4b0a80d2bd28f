"""Snapshot of the weight shard: hash the chip's own memory, then copy the raw shard out.

The digest comes from the tensors the chip holds, hashed in place while the chip is frozen;
the copy-out is written afterwards from the same (still frozen) memory, so the file's content
hashes to the logged digest, but the digest never depends on the file.
Copy-out file: safetensors, tensors named "region.00000", "region.00001", ... in shard order,
string metadata {"format", "serial", "counter", "step", "shard_digest"}; header in canonical JSON,
data section = the packed shard (each tensor's data_offsets = its region's offset); written
atomically.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from computewatch.crypto.atomic import fsync_dir
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.hashing import (
    Region,
    dtype_name,
    hash_regions,
    shard_digest,
    tensor_memory,
)

__all__ = [
    "COPY_OUT_FORMAT",
    "ShardCapture",
    "SnapshotRecord",
    "capture_shard",
    "copy_out_name",
    "on_one_cuda_device",
    "region_name",
]

COPY_OUT_FORMAT = "computewatch-chip-snapshot-v1"


def region_name(i: int) -> str:
    return f"region.{i:05d}"


def copy_out_name(serial: str, counter: int) -> str:
    return f"{serial}-snap-{counter:08d}.safetensors"


@dataclass(frozen=True)
class SnapshotRecord:
    """What the Prover gets back for each snapshot the chip took."""

    counter: int  # the snapshot entry's counter in the chip log
    step: int  # the optimizer step whose end state was captured
    clock_ns: int
    busy_ns: int
    triggers: tuple[int, ...]  # the scheduled busy times (ns) that fired inside the step
    shard_digest: str  # hex BLAKE3-256 shard digest, as logged
    regions: tuple[Region, ...]
    path: Path  # the copy-out file in the owner's storage
    stall_s: float  # time the owner's step waited (hash + copy-out + durable log append)


@dataclass(frozen=True)
class ShardCapture:
    regions: list[Region]
    digest: bytes
    path: Path
    hash_s: float
    copy_s: float


def _write_copy_out(path: Path, tensors: Sequence[torch.Tensor], regions: Sequence[Region], meta: dict[str, str]) -> None:
    """Write a safetensors file whose data section is the packed shard in region order.

    The header is canonical JSON (padded with spaces to 8 bytes, as safetensors does) and each
    tensor's data_offsets equal its region's offset, so the file is byte-reproducible and its
    data section is exactly the bytes the chip hashed. Streamed from the tensors' memory (no
    second in-memory copy), then fsync + rename, so a crash never leaves a torn copy-out.
    """
    header: dict[str, object] = {"__metadata__": meta}
    for i, r in enumerate(regions):
        header[region_name(i)] = {"dtype": r.dtype, "shape": list(r.shape), "data_offsets": [r.offset, r.offset + r.nbytes]}
    head = canonical_json(header)
    head += b" " * (-len(head) % 8)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(struct.pack("<Q", len(head)) + head)
            for t in tensors:
                fh.write(tensor_memory(t.detach().to("cpu")))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written copy-out left in the owner's storage
        raise
    fsync_dir(path.parent)


def on_one_cuda_device(tensors: Sequence[torch.Tensor]) -> bool:
    devices = {t.device for t in tensors}
    return len(devices) == 1 and next(iter(devices)).type == "cuda"


def _cuda_hash_and_copy(
    tensors: Sequence[torch.Tensor], pinned: Sequence[torch.Tensor] | None
) -> tuple[list[Region], list[torch.Tensor]]:
    """GPU path (computewatch.chip.gpu_snapshot): hash in device memory while a second stream
    copies the same bytes to pinned host memory; the digests still come from device memory.
    ``pinned``: host buffers allocated once at attach, so pinning never counts in the stall."""
    from computewatch.chip.gpu_snapshot import snapshot_cuda_regions

    snap = snapshot_cuda_regions(list(tensors), host=pinned)
    regions: list[Region] = []
    offset = 0
    for t, d in zip(tensors, snap.digests, strict=True):
        nbytes = t.numel() * t.element_size()
        regions.append(Region(offset, dtype_name(t.dtype), tuple(t.shape), nbytes, d))
        offset += nbytes
    return regions, list(snap.host)


def capture_shard(
    tensors: Sequence[torch.Tensor],
    storage_dir: Path,
    *,
    serial: str,
    counter: int,
    step: int,
    pinned: Sequence[torch.Tensor] | None = None,
) -> ShardCapture:
    """Hash the regions in place, then write the copy-out. The caller holds the chip frozen."""
    t0 = time.perf_counter()
    if on_one_cuda_device(tensors):
        regions, host = _cuda_hash_and_copy(tensors, pinned)
    else:
        regions, host = hash_regions(tensors), list(tensors)
    digest = shard_digest(regions)
    t1 = time.perf_counter()
    meta = {
        "format": COPY_OUT_FORMAT,
        "serial": serial,
        "counter": str(counter),
        "step": str(step),
        "shard_digest": digest.hex(),
    }
    path = Path(storage_dir) / copy_out_name(serial, counter)
    _write_copy_out(path, host, regions, meta)
    return ShardCapture(regions, digest, path, t1 - t0, time.perf_counter() - t1)
