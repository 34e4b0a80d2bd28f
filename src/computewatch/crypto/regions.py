"""A shard's regions and its digest, without torch: what a Verifier reads back from a chip log.

A region is one tensor's bytes as they sit in memory (little-endian, C order). A shard digest
binds the ordered list of regions, each with its offset, dtype, shape, size and BLAKE3-256
digest, so the digest records every parameter needed to recompute it (docs/formats.md).
Regions are made from tensors by `computewatch.crypto.hashing.hash_regions`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.digest import DIGEST_SIZE, blake3_bytes
from computewatch.crypto.errors import FormatError

__all__ = ["ITEMSIZE", "SHARD_HASH", "SHARD_VERSION", "Region", "shard_digest"]

SHARD_VERSION = 1
SHARD_HASH = "blake3-256"

# Bytes per element of each safetensors dtype name a region may carry (tests/test_crypto_hashing.py
# checks these against torch's element sizes).
ITEMSIZE: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "I16": 2,
    "I32": 4,
    "I64": 8,
    "F16": 2,
    "BF16": 2,
    "F32": 4,
    "F64": 8,
    "C64": 8,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


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
        if self.dtype not in ITEMSIZE:
            raise FormatError(f"region dtype {self.dtype!r} is not a known safetensors dtype name")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in self.shape):
            raise FormatError(f"region shape must be non-negative integers, got {self.shape!r}")
        if not isinstance(self.nbytes, int) or isinstance(self.nbytes, bool) or self.nbytes < 0:
            raise FormatError(f"region nbytes must be a non-negative integer, got {self.nbytes!r}")
        expected = math.prod(self.shape) * ITEMSIZE[self.dtype]
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


def shard_digest(regions: Sequence[Region]) -> bytes:
    """BLAKE3-256 over the canonical JSON of the shard's region list (hash parameters included)."""
    doc = {"v": SHARD_VERSION, "hash": SHARD_HASH, "regions": [r.to_json() for r in regions]}
    return blake3_bytes(canonical_json(doc))
