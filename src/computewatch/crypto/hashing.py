"""BLAKE3-256 over tensor memory (zero-copy on CPU), SHA-256, and shard/region digests.

A region is one tensor's bytes as they sit in memory (little-endian, C order). A shard digest
binds the ordered list of regions, each with its offset, dtype, shape, size and BLAKE3-256
digest, so the digest records every parameter needed to recompute it (docs/formats.md).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import blake3 as _blake3
import torch

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError, FormatError

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

DIGEST_SIZE = 32
SHARD_VERSION = 1
SHARD_HASH = "blake3-256"
# Below ~1 MiB, spinning up blake3's thread pool costs more than it saves.
MT_THRESHOLD = 1 << 20

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
_ITEMSIZE = {name: torch.empty(0, dtype=dt).element_size() for dt, name in _DTYPE_NAMES.items()}


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
    return memoryview(flat.numpy()).toreadonly()


def _hasher(nbytes: int, threads: int | None) -> Any:
    if threads is None:
        workers = _blake3.blake3.AUTO if nbytes >= MT_THRESHOLD else 1
    else:
        if threads < 1:
            raise FormatError(f"threads must be >= 1, got {threads}")
        workers = threads
    return _blake3.blake3(max_threads=workers)


def blake3_bytes(data: bytes | bytearray | memoryview, *, threads: int | None = None) -> bytes:
    """Standard BLAKE3-256 of a bytes-like object (multithreaded above MT_THRESHOLD)."""
    view = memoryview(data)
    hasher = _hasher(view.nbytes, threads)
    hasher.update(view)
    return hasher.digest()


def blake3_tensor(t: torch.Tensor, *, threads: int | None = None) -> bytes:
    """BLAKE3-256 of a tensor's bytes; CPU tensors in place, CUDA tensors on the GPU kernel."""
    if isinstance(t, torch.Tensor) and t.device.type == "cuda":
        return _gpu_digests([t])[0]
    return blake3_bytes(tensor_memory(t), threads=threads)


def sha256_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 (hashlib) of a bytes-like object."""
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Region:
    """One tensor of a shard: where it sits in the packed shard, what it is, and its digest."""

    offset: int
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.offset, int) or isinstance(self.offset, bool) or self.offset < 0:
            raise FormatError(f"region offset must be a non-negative integer, got {self.offset!r}")
        if self.dtype not in _ITEMSIZE:
            raise FormatError(f"region dtype {self.dtype!r} is not a known safetensors dtype name")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in self.shape):
            raise FormatError(f"region shape must be non-negative integers, got {self.shape!r}")
        if not isinstance(self.nbytes, int) or isinstance(self.nbytes, bool) or self.nbytes < 0:
            raise FormatError(f"region nbytes must be a non-negative integer, got {self.nbytes!r}")
        expected = math.prod(self.shape) * _ITEMSIZE[self.dtype]
        if self.nbytes != expected:
            raise FormatError(f"region nbytes {self.nbytes} does not match shape {self.shape} of {self.dtype} ({expected})")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise FormatError(f"region digest must be {DIGEST_SIZE} bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "nbytes": self.nbytes,
            "digest": self.digest.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Region:
        if not isinstance(obj, dict):
            raise FormatError(f"region must be a JSON object, got {type(obj).__name__}")
        expected = {"offset", "dtype", "shape", "nbytes", "digest"}
        if set(obj) != expected:
            raise FormatError(
                f"region fields must be exactly {sorted(expected)}; missing {sorted(expected - set(obj))}, "
                f"unexpected {sorted(set(obj) - expected)}"
            )
        shape = obj["shape"]
        if not isinstance(shape, list):
            raise FormatError("region shape must be a JSON list")
        digest_hex = obj["digest"]
        if not isinstance(digest_hex, str) or len(digest_hex) != 2 * DIGEST_SIZE or digest_hex != digest_hex.lower():
            raise FormatError("region digest must be 64 lowercase hex characters")
        try:
            digest = bytes.fromhex(digest_hex)
        except ValueError:
            raise FormatError("region digest is not valid hex") from None
        return cls(offset=obj["offset"], dtype=obj["dtype"], shape=tuple(shape), nbytes=obj["nbytes"], digest=digest)


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


def shard_digest(regions: Sequence[Region]) -> bytes:
    """BLAKE3-256 over the canonical JSON of the shard's region list (hash parameters included)."""
    doc = {"v": SHARD_VERSION, "hash": SHARD_HASH, "regions": [r.to_json() for r in regions]}
    return blake3_bytes(canonical_json(doc))
