"""The GPU snapshot path, as far as a machine without CUDA can check it (the GPU benchmark is in
test_bench_scripts.py): it imports, refuses clearly without CUDA, and its host-side pieces are right. The hashing
it runs on the GPU is the kernel tested under the interpreter in test_blake3_triton.py."""

from __future__ import annotations

import pytest
import torch

from computewatch.chip import gpu_snapshot
from computewatch.crypto._blake3_errors import GpuHashError


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_snapshot_without_cuda_names_the_problem(no_cuda: None) -> None:
    with pytest.raises(GpuHashError, match="needs CUDA"):
        gpu_snapshot.snapshot_cuda_regions([torch.zeros(8)])
    with pytest.raises(GpuHashError, match="needs CUDA"):
        gpu_snapshot.allocate_pinned([torch.zeros(8)])
    with pytest.raises(GpuHashError, match="needs CUDA"):
        gpu_snapshot.copy_out_only([torch.zeros(8)], [torch.zeros(32, dtype=torch.uint8)])


def test_snapshot_refuses_regions_off_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="one CUDA device"):
        gpu_snapshot.snapshot_cuda_regions([torch.zeros(8)])
    with pytest.raises(ValueError, match="at least one region"):
        gpu_snapshot.snapshot_cuda_regions([])


@pytest.mark.parametrize(("nbytes", "chunk", "expected"), [
    (0, 4, []),
    (4, 4, [(0, 4)]),
    (10, 4, [(0, 4), (4, 8), (8, 10)]),
    (3, 64 << 20, [(0, 3)]),
])
def test_copy_chunks_cover_each_byte_once(nbytes: int, chunk: int, expected: list[tuple[int, int]]) -> None:
    assert gpu_snapshot._chunks(nbytes, chunk) == expected


def test_copy_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        gpu_snapshot._chunks(10, 0)


def test_host_bytes_come_back_as_the_regions() -> None:
    regions = [torch.randn(3, 4), torch.arange(5, dtype=torch.int64), torch.tensor(True),
               torch.randn(6, 2).to(torch.bfloat16).t(), torch.empty(0, 3)]
    host = [gpu_snapshot._byte_view(t).clone() for t in regions]
    back = gpu_snapshot._as_regions(host, regions)
    for original, copy in zip(regions, back, strict=True):
        assert copy.dtype == original.dtype and copy.shape == original.shape
        assert torch.equal(copy, original)


def test_copy_enqueue_checks_the_host_buffers() -> None:
    empty = torch.empty(0, dtype=torch.uint8)
    # An empty region (a zero-size parameter) has an empty, unpinnable buffer: nothing to copy.
    gpu_snapshot._enqueue_copies([empty], [torch.empty(0, dtype=torch.uint8)], 64)
    with pytest.raises(ValueError, match="host buffers"):
        gpu_snapshot._enqueue_copies([empty, empty], [empty], 64)
    with pytest.raises(ValueError, match="pinned"):
        gpu_snapshot._enqueue_copies([torch.zeros(8, dtype=torch.uint8)], [torch.zeros(8, dtype=torch.uint8)], 64)
