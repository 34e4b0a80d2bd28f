"""`computewatch train`: the demo workload under monitoring, each process bound to one chip."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["train"]

# The demo's defaults (computewatch.prover.runner.DEMO_*), repeated so that loading the CLI
# does not import torch: at 24 snapshots per busy day and 60 simulated busy seconds per step,
# a 200-step run shows about three snapshots per chip.
DEMO_SNAPSHOTS_PER_DAY = 24.0
DEMO_CHIP_SECONDS_PER_STEP = 60.0


def train(
    preset: str = typer.Option("tiny", "--preset", help="Workload: tiny or small (mlp for quick tests)."),
    steps: int = typer.Option(200, "--steps", min=1, help="Optimizer steps."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="gloo processes; every rank is one chip."),
    strategy: str = typer.Option("ddp", "--strategy", help="With --nproc > 1: ddp (replicas) or fsdp (shards)."),
    chips: Path | None = typer.Option(None, "--chips", help="Folder of chip state dirs; default: provision new ones under OUT/chips."),
    snapshots_per_day: float = typer.Option(DEMO_SNAPSHOTS_PER_DAY, "--snapshots-per-day", help="Snapshot rate f of newly provisioned chips (per busy day)."),
    chip_seconds_per_step: float = typer.Option(
        DEMO_CHIP_SECONDS_PER_STEP,
        "--chip-seconds-per-step",
        help="Busy time each step adds to the chip's clock (simulated, so a short demo sees snapshots); 0 = measured step time.",
    ),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1, help="Checkpoint interval k in steps."),
    out: Path = typer.Option(Path("run"), "--out", help="Run directory (transcript) to create or resume."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its latest complete checkpoint."),
) -> None:
    """Train the demo workload under monitoring and say where the transcript and chip logs are."""
    from rich.console import Console
    from rich.progress import Progress

    from computewatch.crypto.errors import ComputewatchError
    from computewatch.prover.runner import TrainConfig
    from computewatch.prover.runner import train as run_train

    console = Console()
    config = TrainConfig(
        out=out,
        preset=preset,
        steps=steps,
        nproc=nproc,
        strategy=strategy,
        chips_dir=chips,
        snapshots_per_day=snapshots_per_day,
        chip_seconds_per_step=chip_seconds_per_step or None,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    try:
        with Progress(console=console, transient=True) as progress:
            # Spawned ranks do not report back per step: the bar then only pulses.
            task = progress.add_task(f"training {preset} on {nproc} chip(s)", total=steps if nproc == 1 else None)
            result = run_train(config, progress=lambda done, total: progress.update(task, completed=done))
    except ComputewatchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"transcript: {result.run_dir}")
    for i, d in enumerate(result.chip_dirs):
        console.print(f"chip log (rank {i}): {d / 'log'}")
    console.print(f"inspect with: computewatch transcript show {result.run_dir}")
