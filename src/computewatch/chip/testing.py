"""Helpers for tests and demos: a provisioned, booted chip over small tensors, and the
chip-internal key a forger would need (to show that the audit catches even a signed forgery)."""

from __future__ import annotations

from pathlib import Path

import torch

from computewatch.chip.chip import Chip, provision_chips
from computewatch.chip.state import load_identity
from computewatch.crypto.signing import SigningKey
from computewatch.formats.identity import derive_boot_key

__all__ = ["TEST_SECRET_SEED", "booted_chip", "leak_boot_key", "run_steps", "small_shard"]


def small_shard(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 8, generator=g), torch.randn(8, generator=g), torch.arange(4, dtype=torch.int64)]


TEST_SECRET_SEED = b"computewatch tests"


def booted_chip(root: Path, *, rate: float = 50.0, index: int = 0, count: int = 1, **policy: object) -> Chip:
    """Provision chip(s) under `root` (one chipmaker) and boot chip `index` with a small shard.

    Device secrets come from a fixed seed, so every snapshot schedule (and every statistical
    check on it) is the same on every run: tests never flake on an unlucky draw."""
    policy.setdefault("secret_seed", TEST_SECRET_SEED)
    dirs = provision_chips(root, count, snapshots_per_day=rate, **policy)  # type: ignore[arg-type]
    chip = Chip.open(dirs[index])
    chip.boot()
    chip.attach(small_shard(index), root / f"storage-{index}")
    return chip


def run_steps(chip: Chip, steps: int, busy_seconds: float, start: int = 0) -> int:
    """Train `steps` steps (weights change each step); returns how many snapshots were taken."""
    assert chip._tensors is not None
    taken = 0
    for s in range(start, start + steps):
        chip._tensors[0].add_(0.5)
        taken += len(chip.step_boundary(s, busy_seconds))
    return taken


def leak_boot_key(chip: Chip) -> SigningKey:
    """The current boot key, read out of sealed state: models a side-channel key theft (§6.2)."""
    ident = load_identity(Path(chip.state_dir))
    assert chip.firmware is not None
    return derive_boot_key(ident.device_secret, chip.firmware.measurement)
