"""What exact (bit-identical) replay of a workload on the CPU needs, and how to set it up.

Two runs from the same seed give bit-identical weights only with the same torch version, the
same thread count (reductions are split across threads, and float addition is not
associative) and deterministic algorithms enabled. The Prover records `replay_environment()`
in its transcript; a Verifier replaying in exact mode calls `deterministic_cpu(threads)` with
the recorded thread count first, and falls back to tolerance mode if the versions differ.
"""

from __future__ import annotations

import platform
import sys

import torch

__all__ = ["deterministic_cpu", "replay_environment"]


def deterministic_cpu(threads: int) -> None:
    """Fix torch's intra-op thread count and require deterministic algorithms (process-wide)."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def replay_environment() -> dict[str, object]:
    """The facts exact replay depends on, as the transcript should record them."""
    return {
        "torch": torch.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
