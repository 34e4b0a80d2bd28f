"""BLAKE3-256 over tensor memory (zero-copy on CPU, the GPU kernel for CUDA tensors) and the
regions of a shard made from tensors.

Hashing bytes (`computewatch.crypto.digest`) and reading regions back (`computewatch.crypto.regions`)
need no torch; this module does, and re-exports their names so `computewatch.crypto.hashing`
keeps every name it had.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from computewatch.crypto.digest import DIGEST_SIZE, MT_THRESHOLD, blake3_bytes, sha256_bytes
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.regions import SHARD_HASH, SHARD_VERSION, Region, shard_digest

__all__ = [
    "DIGEST_SIZE",
    "MT_THRESHOLD",
    "SHARD_HASH",
    "SHARD_VERSION",
    "Region",
    "blake3_bytes",
    "blake3_tensor",
    "dtype_name",
    "hash_regions",
    "sha256_bytes",
    "shard_digest",
    "tensor_memory",
]

# Names as safetensors writes them in its header, so a region's dtype reads the same in both.
_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.complex64: "C64",
}
for _attr, _name in (
    ("uint16", "U16"),
    ("uint32", "U32"),
    ("uint64", "U64"),
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
):
    # Newer dtypes: registered only where this torch build has them.
    if hasattr(torch, _attr):
        _DTYPE_NAMES[getattr(torch, _attr)] = _name


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (`F32`, `BF16`, ...)."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise FormatError(f"dtype {dtype} has no safetensors name; cannot describe it as a region") from None


def _require_little_endian() -> None:
    if sys.byteorder != "little":
        raise ComputewatchError("region digests are defined over little-endian bytes; big-endian hosts are unsupported")


def tensor_memory(t: torch.Tensor) -> memoryview:
    """A read-only view of a CPU tensor's bytes (little-endian, C order).

    Contiguous tensors are viewed in place: no copy, whatever the dtype (bf16 and float8 included,
    since the view goes through uint8). Non-contiguous tensors, or ones with a lazy conjugate/negation
    bit, are first materialised with `.contiguous()`; that copy is unavoidable because their
    logical C-order bytes do not exist in memory.
    """
    if not isinstance(t, torch.Tensor):
        raise FormatError(f"expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise FormatError(f"tensor_memory needs a CPU tensor, got one on {t.device}")
    if t.layout != torch.strided:
        raise FormatError(f"tensor_memory needs a dense (strided) tensor, got layout {t.layout}")
    _require_little_endian()
    dtype_name(t.dtype)  # reject dtypes that have no region name before touching memory
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    flat = t.reshape(-1).view(torch.uint8)  # a view: contiguous, so no copy
    return flat.numpy().data.toreadonly()


def blake3_tensor(t: torch.Tensor, *, threads: int | None = None) -> bytes:
    """BLAKE3-256 of a tensor's bytes; CPU tensors in place, CUDA tensors on the GPU kernel."""
    if isinstance(t, torch.Tensor) and t.device.type == "cuda":
        return _gpu_digests([t])[0]
    return blake3_bytes(tensor_memory(t), threads=threads)


def _gpu_digests(tensors: Sequence[torch.Tensor]) -> list[bytes]:
    # Imported lazily: triton is an optional dependency and CPU-only users never need it.
    try:
        from computewatch.crypto import blake3_triton
    except ImportError as exc:
        raise ComputewatchError(
            f"CUDA tensors need the GPU BLAKE3 kernel (computewatch.crypto.blake3_triton), which is unavailable: {exc}; "
            "install the 'gpu' extra or move the tensors to the CPU"
        ) from exc
    digests = list(blake3_triton.blake3_regions(list(tensors)))
    if len(digests) != len(tensors) or not all(isinstance(d, bytes) and len(d) == DIGEST_SIZE for d in digests):
        raise ComputewatchError("GPU BLAKE3 kernel returned a malformed digest list")
    return digests


def hash_regions(tensors: Sequence[torch.Tensor], *, threads: int | None = None) -> list[Region]:
    """Hash each tensor as one region of a shard, in order, with packed offsets.

    CUDA tensors go to the GPU kernel in one batched call (one launch for many regions is what
    keeps GPU hashing fast); CPU tensors are hashed in place.
    """
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise FormatError(f"region {i}: expected a torch.Tensor, got {type(t).__name__}")
        dtype_name(t.dtype)
    digests: list[bytes | None] = [None] * len(tensors)
    cuda_idx = [i for i, t in enumerate(tensors) if t.device.type == "cuda"]
    if cuda_idx:
        for i, d in zip(cuda_idx, _gpu_digests([tensors[i] for i in cuda_idx]), strict=True):
            digests[i] = d
    regions: list[Region] = []
    offset = 0
    for i, t in enumerate(tensors):
        digest = digests[i]
        if digest is None:
            digest = blake3_tensor(t, threads=threads)
        nbytes = t.numel() * t.element_size()
        regions.append(Region(offset, dtype_name(t.dtype), tuple(t.shape), nbytes, digest))
        offset += nbytes
    return regions
