"""Chips for tests: reproducible device secrets, a provisioned and booted chip over a small
shard, and the chip-internal key a forger would need (to show that the audit catches even a
signed forgery). Test-only: the library has no way to read a chip's keys out."""

from __future__ import annotations

from pathlib import Path

from computewatch.chip.chip import Chip, provision_chips
from computewatch.chip.exercise import run_steps, small_shard
from computewatch.chip.state import load_identity
from computewatch.crypto.signing import SigningKey
from computewatch.formats.identity import derive_boot_key

__all__ = ["TEST_SECRET_SEED", "booted_chip", "leak_boot_key", "run_steps", "small_shard"]

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


def leak_boot_key(chip: Chip) -> SigningKey:
    """The current boot key, read out of sealed state: models a side-channel key theft (§6.2)."""
    ident = load_identity(Path(chip.state_dir))
    assert chip.firmware is not None
    return derive_boot_key(ident.device_secret, chip.firmware.measurement)
