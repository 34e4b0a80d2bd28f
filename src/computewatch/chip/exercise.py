"""Drive a simulated chip without a training loop: a small shard of weights and busy steps that
change it. The attack suite and the benchmarks use these to fill chip logs quickly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from computewatch.chip.chip import Chip

__all__ = ["run_steps", "small_shard"]


def small_shard(seed: int = 0) -> list[torch.Tensor]:
    """Three small tensors (float and int) standing in for a chip's weight shard."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 8, generator=g), torch.randn(8, generator=g), torch.arange(4, dtype=torch.int64)]


def run_steps(chip: Chip, steps: int, busy_seconds: float, start: int = 0) -> int:
    """Train `steps` steps (weights change each step); returns how many snapshots were taken."""
    assert chip._tensors is not None
    taken = 0
    for s in range(start, start + steps):
        chip._tensors[0].add_(0.5)
        taken += len(chip.step_boundary(s, busy_seconds))
    return taken
