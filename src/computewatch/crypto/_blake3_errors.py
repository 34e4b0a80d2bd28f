"""The error of the GPU hashing path (private module: importable without Triton, so the chip's
snapshot code can raise and catch it on machines that have neither Triton nor CUDA)."""

from __future__ import annotations

from computewatch.crypto.errors import ComputewatchError

__all__ = ["GpuHashError"]


class GpuHashError(ComputewatchError, RuntimeError):
    """The GPU BLAKE3 kernel cannot run on these tensors here (no CUDA, wrong device, or
    kernels built by the interpreter); the message says which and what to use instead."""
