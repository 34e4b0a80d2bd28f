"""`computewatch bench overhead`: training steps/s with and without monitoring, same process."""

from __future__ import annotations

import json

import typer

from computewatch.cli.bench import app

__all__ = ["overhead"]


@app.command("overhead")
def overhead(
    preset: str = typer.Option("small", "--preset", help="Workload preset."),
    block: int = typer.Option(1, "--block", min=1, help="Steps per timed block (1: alternate step by step)."),
    repeats: int = typer.Option(200, "--repeats", min=1, help="Plain/monitored block pairs."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", min=1, help="Checkpoint interval k."),
    snapshots_per_day: float = typer.Option(0.1, "--snapshots-per-day", help="Chip snapshot rate f."),
    threads: int = typer.Option(1, "--threads", min=1, help="Training threads."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Monitoring overhead at a realistic snapshot rate and checkpoint interval (method: computewatch.prover.bench)."""
    from rich.console import Console
    from rich.progress import Progress

    from computewatch.prover.bench import measure_overhead

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"bench overhead ({preset})", total=None)
        result = measure_overhead(
            preset=preset,
            block=block,
            repeats=repeats,
            checkpoint_every=checkpoint_every,
            snapshots_per_day=snapshots_per_day,
            threads=threads,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if as_json:
        print(json.dumps(result))
        return
    out = Console()
    out.print(f"plain {result['steps_per_s_plain']:.3f} steps/s, monitored {result['steps_per_s_monitored']:.3f} steps/s")
    out.print(f"overhead {result['overhead']:+.4f} (totals); median pair {result['overhead_median_pair']:+.4f}; "
              f"accounted {result['overhead_accounted']:.5f}")
    forced = result["forced_snapshot"]
    if forced["mean_stall_s"] is not None:
        out.print(f"forced snapshots: {forced['snapshots']}, stall {forced['mean_stall_s'] * 1e3:.1f} ms each "
                  f"({forced['stall_over_step_time']:.3f} of a step); amortised at f: {forced['amortized_overhead_at_f']:.2e}")
