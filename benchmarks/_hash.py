"""Hash throughput measurement of benchmarks/bench_hash.py.

Method: one buffer of `mib` MiB, resident before timing; each repetition times computewatch's
blake3_tensor, the raw `blake3` package (max threads) and hashlib SHA-256 on the same bytes,
interleaved so drift in machine load hits all three alike; the best time of each is kept.
`ratio` = computewatch throughput / raw blake3 throughput: 1.0 means zero overhead.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import blake3 as _blake3
import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.hashing import blake3_tensor

__all__ = ["max_buffer_mib", "measure_hash_throughput"]


def max_buffer_mib() -> int:
    """The largest buffer worth hashing here: a quarter of physical memory (at least 1 MiB)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 14
    return max(1, total // 4 >> 20)


def _best(fn: Callable[[], object], times: list[float]) -> None:
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)


def measure_hash_throughput(mib: int = 1024, repeats: int = 3) -> dict[str, Any]:
    """Throughputs in GB/s (1e9 bytes per second) and the computewatch/raw-blake3 ratio."""
    if mib < 1:
        raise FormatError(f"--mib must be >= 1, got {mib}")
    if repeats < 1:
        raise FormatError(f"repeats must be >= 1, got {repeats}")
    nbytes = mib << 20
    # Filled (not torch.empty) so every page is resident before the clock starts.
    t = torch.full((nbytes,), 0x5A, dtype=torch.uint8)
    arr = t.numpy()
    cw: list[float] = []
    raw: list[float] = []
    sha: list[float] = []
    for _ in range(repeats):
        _best(lambda: blake3_tensor(t), cw)
        _best(lambda: _blake3.blake3(arr.data, max_threads=_blake3.blake3.AUTO).digest(), raw)
        _best(lambda: hashlib.sha256(arr.data).digest(), sha)
    cw_gbps = nbytes / min(cw) / 1e9
    raw_gbps = nbytes / min(raw) / 1e9
    return {
        "bytes": nbytes,
        "computewatch_gbps": round(cw_gbps, 3),
        "blake3_gbps": round(raw_gbps, 3),
        "sha256_gbps": round(nbytes / min(sha) / 1e9, 3),
        "ratio": round(cw_gbps / raw_gbps, 4),
    }
