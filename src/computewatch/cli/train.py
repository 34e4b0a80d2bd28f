"""`computewatch train`: the demo workload under monitoring, each process bound to one chip.

Every option is checked before anything is created: a bad option leaves no run folder, chip
or key behind (docs/cli.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from computewatch.cli._common import (
    FLAG,
    available_cores,
    check_output_dir,
    fail,
    guard,
    out,
    progress,
)
from computewatch.formats.firmware import MAX_SNAPSHOTS_PER_DAY

__all__ = ["MAX_NPROC", "MAX_STEPS", "PRESET_NAMES", "train"]

# The demo's defaults (computewatch.prover.runner.DEMO_*), repeated so that loading the CLI
# does not import torch: at 24 snapshots per busy day and 60 simulated busy seconds per step,
# a 200-step run shows about three snapshots per chip.
DEMO_SNAPSHOTS_PER_DAY = 24.0
DEMO_CHIP_SECONDS_PER_STEP = 60.0
PRESET_NAMES = ("tiny", "small", "mlp")  # computewatch.prover.workloads.PRESETS (a test keeps them equal)
PresetName = Literal["tiny", "small", "mlp"]
StrategyName = Literal["ddp", "fsdp"]
# Every rank is a gloo process with its own thread: more ranks than cores only thrash (two are
# always allowed, so the distributed demo runs on one core too).
MAX_NPROC = max(2, available_cores())
MAX_STEPS = 10**9
MAX_CHIP_SECONDS_PER_STEP = 86_400.0  # computewatch.chip.MAX_STEP_BUSY_S


def train(
    preset: Annotated[PresetName, typer.Option("--preset", help="Workload (mlp for quick tests).")] = "tiny",
    steps: int = typer.Option(200, "--steps", min=1, max=MAX_STEPS, help="Optimizer steps."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, max=MAX_NPROC, help="gloo processes, every rank one chip (at most this machine's cores)."
    ),
    strategy: Annotated[StrategyName, typer.Option("--strategy", help="With --nproc > 1: ddp (replicas) or fsdp (shards).")] = "ddp",
    chips: Annotated[Path | None, typer.Option("--chips", help="Folder of chip state dirs; default: provision new ones under OUT/chips.")] = None,
    snapshots_per_day: float = typer.Option(
        DEMO_SNAPSHOTS_PER_DAY, "--snapshots-per-day", min=0.0, max=MAX_SNAPSHOTS_PER_DAY,
        help="Snapshot rate f of newly provisioned chips (per busy day).",
    ),
    chip_seconds_per_step: float = typer.Option(
        DEMO_CHIP_SECONDS_PER_STEP,
        "--chip-seconds-per-step",
        min=0.0,
        max=MAX_CHIP_SECONDS_PER_STEP,
        help="Busy time each step adds to the chip's clock (simulated, so a short demo sees snapshots); 0 = measured step time.",
    ),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1, max=MAX_STEPS, help="Checkpoint interval k in steps."),
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory (transcript) to create, or to resume with --resume.")] = Path("run"),
    resume: bool = typer.Option(
        False, "--resume", metavar=FLAG, help="Continue the run in OUT from its latest complete checkpoint (OUT must hold one)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, max=1024,
        help="Intra-op threads per rank (default: this machine's cores / --nproc); exact replay uses the same count.",
    ),
) -> None:
    """Train the demo workload under monitoring and say where the transcript and chip logs are."""
    from computewatch.formats.manifest import MANIFEST_FILE

    check_output_dir(out_dir)
    holds_run = (out_dir / MANIFEST_FILE).exists()
    if resume and not holds_run:
        fail(f"--resume: {out_dir} holds no run to resume (no {MANIFEST_FILE}); leave out --resume to start one")
    if holds_run and not resume:
        fail(f"{out_dir} already holds a run; resume it (--resume) or choose a new --out")
    if chips is not None and not chips.is_dir():
        fail(f"--chips {chips} is not a folder of chip state directories")

    from computewatch.crypto.errors import ComputewatchError
    from computewatch.prover.runner import TrainConfig
    from computewatch.prover.runner import train as run_train

    config = TrainConfig(
        out=out_dir,
        preset=preset,
        steps=steps,
        nproc=nproc,
        strategy=strategy,
        chips_dir=chips,
        snapshots_per_day=snapshots_per_day,
        chip_seconds_per_step=chip_seconds_per_step or None,
        checkpoint_every=checkpoint_every,
        resume=resume,
        threads=threads,
    )
    with guard():
        config.validate()
    try:
        # Spawned ranks do not report back per step: then only the start is shown.
        with progress(f"training {preset} on {nproc} chip(s)", steps if nproc == 1 else None) as update:
            result = run_train(config, progress=lambda done, total: update(done))
    except ComputewatchError as exc:
        fail(str(exc))
    out.print(f"transcript: {result.run_dir}")
    for i, d in enumerate(result.chip_dirs):
        out.print(f"chip log (rank {i}): {d / 'log'}")
    out.print(f"inspect with: computewatch transcript show {result.run_dir}")
