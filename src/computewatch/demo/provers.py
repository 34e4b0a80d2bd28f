"""The demo's Provers: A trains honestly and declares its run; B declares a small decoy run and
trains a covert run on other chips it holds, which it neither declares nor hands over.

Both train with the project's monitored runner (`computewatch.prover.runner.train`, the same
code as `computewatch train`): every rank is one chip, which boots its signed firmware, logs the
run's precommitment and memory map, and snapshots the weights at random busy times. A Prover
signs its transcript's manifest with the key the register holds for it: the runner signs with
`<run>/keys/prover.key` when that file exists, so the demo puts the owner's key there first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computewatch.demo.world import World

__all__ = ["ProverRun", "RunSize", "covert_run", "declared_run"]

Say = Callable[[str], None]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunSize:
    """How big a demo run is: workload preset, optimizer steps, checkpoint interval k, and the
    simulated chip busy time each step reports (with the chips' rate f it sets how many
    snapshots a chip logs: f x steps x seconds / 86400)."""

    preset: str = "tiny"
    steps: int = 20
    checkpoint_every: int = 20
    chip_seconds_per_step: float = 1200.0
    strategy: str = "fsdp"  # for several chips: every chip holds its own shard of the weights


@dataclass(frozen=True)
class ProverRun:
    owner: str
    run_id: str
    run_dir: Path
    serials: list[str]
    size: RunSize
    declared: bool
    submitted: bool  # handed to the Verifier when it asks for transcripts
    precommitment: str  # hex digest the chips logged

    def to_json(self) -> dict[str, Any]:
        return {"owner": self.owner, "run_id": self.run_id, "run_dir": str(self.run_dir), "chips": self.serials,
                "preset": self.size.preset, "steps": self.size.steps, "declared": self.declared,
                "submitted": self.submitted, "precommitment": self.precommitment}


def _train(world: World, owner: str, rack: str, name: str, size: RunSize, progress: Progress | None) -> tuple[str, Path, list[str], str]:
    from computewatch.formats.manifest import read_manifest
    from computewatch.formats.storage import RunStorage
    from computewatch.prover.runner import TrainConfig, train

    chips = world.chips_of(owner, rack)
    run_dir = world.root / "runs" / owner / name
    (run_dir / "keys").mkdir(parents=True, exist_ok=True)
    key = world.keys[owner]
    key.save(run_dir / "keys" / "prover.key")  # the runner signs the manifest with it
    key.public_key.save(run_dir / "keys" / "prover.pub")
    run_id = uuid.uuid4().hex
    config = TrainConfig(
        out=run_dir,
        preset=size.preset,
        steps=size.steps,
        nproc=len(chips),
        strategy=size.strategy,
        chips_dir=world.rack(owner, rack),
        chip_seconds_per_step=size.chip_seconds_per_step,
        checkpoint_every=size.checkpoint_every,
        threads=1,
        run_id=run_id,
    )
    train(config, progress=progress)
    manifest = read_manifest(RunStorage(run_dir), [key.public_key])
    return run_id, run_dir, [c.serial for c in chips], manifest.precommitment.digest().hex()


def declared_run(world: World, owner: str, rack: str, name: str, size: RunSize, *, progress: Progress | None = None) -> ProverRun:
    """Train a run honestly on the owner's chips in `rack` and declare it in the register."""
    run_id, run_dir, serials, digest = _train(world, owner, rack, name, size, progress)
    world.registry.declare_run(owner, run_id, serials, precommitment=digest)
    return ProverRun(owner, run_id, run_dir, serials, size, declared=True, submitted=True, precommitment=digest)


def covert_run(world: World, owner: str, rack: str, name: str, size: RunSize, *, progress: Progress | None = None) -> ProverRun:
    """Train a run on the owner's chips in `rack` and hide it: it is never declared, and its
    transcript stays in the owner's storage (the Verifier never gets it). The chips log it anyway."""
    run_id, run_dir, serials, digest = _train(world, owner, rack, name, size, progress)
    return ProverRun(owner, run_id, run_dir, serials, size, declared=False, submitted=False, precommitment=digest)

