"""Throughput measurement of the Triton BLAKE3 kernels on a CUDA device (private).

Every number is measured against a baseline in the same run on the same bytes: a plain
device read (a read-only Triton kernel, and ``torch.sum`` as a second opinion; the faster
one is the baseline), and for many regions the same bytes as one buffer. Timings are
best-of-N after a warmup; the hash time is end to end (plan, every launch, digests on the
host), because that is what a snapshot waits for.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import blake3
import torch
import triton
import triton.language as tl

from computewatch.crypto.blake3_triton import (
    DEFAULT_CONFIG,
    KernelConfig,
    blake3_regions,
)

__all__ = ["SWEEPS", "cpu_blake3", "measure_gpu_hash", "measure_many_regions", "random_device_bytes"]

# Launch shapes tried by the benchmark; the fastest is reported (all must give the CPU digest).
SWEEPS: dict[str, tuple[KernelConfig, ...]] = {
    "none": (DEFAULT_CONFIG,),
    "small": (DEFAULT_CONFIG,
              KernelConfig(fma_adds=False),
              KernelConfig(quads=False),
              KernelConfig(chunk_tile=32, chunk_warps=1),
              KernelConfig(chunk_tile=128, chunk_warps=2),
              KernelConfig(chunk_tile=128, chunk_warps=4)),
    # At most two chunks per thread: beyond that the state no longer fits in registers.
    "full": tuple(KernelConfig(chunk_tile=t, chunk_warps=w, quads=q, fma_adds=f)
                  for t in (32, 64, 128, 256) for w in (1, 2, 4, 8) if 32 * w <= t <= 64 * w
                  for q in (True, False) for f in (True, False)),
}


@triton.jit
def _read_kernel(src, out, n_words, BLOCK: tl.constexpr):
    """Read every word once (XOR-folded so the loads cannot be optimised away)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src + offs, mask=offs < n_words, other=0)
    tl.store(out + tl.program_id(0), tl.xor_sum(x, axis=0))


def _best_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        # CUDA events time the device work; the host clock catches host-side waits (the
        # digests' copy back): take the larger, never flatter the kernel.
        best = min(best, max(start.elapsed_time(end) / 1000.0, time.perf_counter() - t0))
    return best


def _read_seconds(buf: torch.Tensor, repeats: int) -> dict[str, float]:
    words = buf.view(torch.int32)
    block = 8192
    grid = triton.cdiv(words.numel(), block)
    out = torch.empty(grid, dtype=torch.int32, device=buf.device)
    return {
        "triton_read": _best_seconds(lambda: _read_kernel[(grid,)](words, out, words.numel(), BLOCK=block,
                                                                   num_warps=8), repeats),
        "torch_sum": _best_seconds(lambda: words.sum(dtype=torch.int64), repeats),
    }


def cpu_blake3(t: torch.Tensor) -> bytes:
    """The ``blake3`` package's digest of a device tensor's bytes (copied to the host)."""
    host = t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
    return blake3.blake3(memoryview(host), max_threads=blake3.blake3.AUTO).digest()


def random_device_bytes(nbytes: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    words = torch.randint(-2**31, 2**31 - 1, (nbytes // 4,), dtype=torch.int32, device=device, generator=g)
    return words.view(torch.uint8)


def measure_gpu_hash(nbytes: int, *, configs: Sequence[KernelConfig] = (DEFAULT_CONFIG,),
                            repeats: int = 5, device: str = "cuda") -> dict:
    """Hash ``nbytes`` random bytes (one region) with each config; compare with a plain read."""
    dev = torch.device(device)
    buf = random_device_bytes(nbytes, dev, seed=2023)
    reference = cpu_blake3(buf)
    reads = _read_seconds(buf, repeats)
    read_s = min(reads.values())
    rows = []
    for config in configs:
        digest = blake3_regions([buf], config=config)[0]
        seconds = _best_seconds(lambda: blake3_regions([buf], config=config), repeats)
        rows.append({"config": dataclasses.asdict(config), "seconds": seconds,
                     "gbps": nbytes / seconds / 1e9, "digest_matches_cpu": digest == reference})
    best = min(rows, key=lambda r: r["seconds"])
    del buf
    torch.cuda.empty_cache()
    return {
        "bytes": nbytes,
        "hash_gbps": best["gbps"],
        "read_gbps": nbytes / read_s / 1e9,
        "ratio": best["gbps"] / (nbytes / read_s / 1e9),
        "digest_matches_cpu": all(r["digest_matches_cpu"] for r in rows),
        "best_config": best["config"],
        "configs": rows,
        "read_baselines_gbps": {k: nbytes / v / 1e9 for k, v in reads.items()},
    }


def measure_many_regions(count: int = 1024, region_bytes: int = 4 << 20, *,
                         config: KernelConfig = DEFAULT_CONFIG, repeats: int = 5,
                         device: str = "cuda") -> dict:
    """``count`` separate tensors in one launch, against the same bytes as one buffer and
    against one call per tensor (the anchor: 135 ms for 1024 x 4 MiB one launch each)."""
    dev = torch.device(device)
    regions = [random_device_bytes(region_bytes, dev, seed=i) for i in range(count)]
    single = torch.cat(regions)
    probe = [0, count // 2, count - 1]
    digests = blake3_regions(regions, config=config)
    matches = all(digests[i] == cpu_blake3(regions[i]) for i in probe)
    batched = _best_seconds(lambda: blake3_regions(regions, config=config), repeats)
    one_buffer = _best_seconds(lambda: blake3_regions([single], config=config), repeats)
    per_tensor = _best_seconds(lambda: [blake3_regions([r], config=config) for r in regions], 1, warmup=1)
    total = count * region_bytes
    del regions, single
    torch.cuda.empty_cache()
    return {
        "regions": count, "region_bytes": region_bytes, "bytes": total,
        "one_launch_s": batched, "one_launch_gbps": total / batched / 1e9,
        "one_buffer_s": one_buffer, "per_tensor_calls_s": per_tensor,
        "digests_match_cpu": matches,
    }
