"""BLAKE3-256 and SHA-256 over bytes: what the chip-log auditor, the formats and the policy engine
hash with. No torch here; tensors are hashed by `computewatch.crypto.hashing`."""

from __future__ import annotations

import hashlib
from typing import Any

import blake3 as _blake3

from computewatch.crypto.errors import FormatError

__all__ = ["DIGEST_SIZE", "MT_THRESHOLD", "blake3_bytes", "sha256_bytes"]

DIGEST_SIZE = 32
# Below ~1 MiB, spinning up blake3's thread pool costs more than it saves.
MT_THRESHOLD = 1 << 20


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


def sha256_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 (hashlib) of a bytes-like object."""
    return hashlib.sha256(data).digest()
