"""`computewatch bench overhead`: training steps/s with and without monitoring, same process."""

from __future__ import annotations

import json
from typing import Literal

import typer

from computewatch.cli._common import (
    FLAG,
    Command,
    available_cores,
    fail,
    guard,
    progress,
)
from computewatch.cli.bench import app
from computewatch.formats.firmware import MAX_SNAPSHOTS_PER_DAY

__all__ = ["overhead"]

MAX_STEPS_PER_MODE = 100_000  # block * repeats: hours of training on the small preset already


@app.command("overhead", cls=Command)
def overhead(
    preset: Literal["mlp", "tiny", "small"] = typer.Option("small", "--preset", help="Workload preset."),
    block: int = typer.Option(1, "--block", min=1, max=MAX_STEPS_PER_MODE, help="Steps per timed block (1: alternate step by step)."),
    repeats: int = typer.Option(200, "--repeats", min=1, max=MAX_STEPS_PER_MODE, help="Plain/monitored block pairs."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", min=1, help="Checkpoint interval k."),
    snapshots_per_day: float = typer.Option(
        0.1, "--snapshots-per-day", min=0.0, max=MAX_SNAPSHOTS_PER_DAY, help="Chip snapshot rate f."
    ),
    threads: int = typer.Option(1, "--threads", min=1, max=available_cores(), help="Training threads (at most the cores)."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print JSON only (also on failure)."),
) -> None:
    """Monitoring overhead at a realistic snapshot rate and checkpoint interval (method: computewatch.prover.bench)."""
    if block * repeats > MAX_STEPS_PER_MODE:
        fail(f"--block x --repeats = {block * repeats:,} steps per mode; at most {MAX_STEPS_PER_MODE:,}", as_json=as_json)
    from rich.console import Console

    from computewatch.prover.bench import measure_overhead, total_steps

    with guard(as_json=as_json), progress(f"bench overhead ({preset})", total_steps(block, repeats)) as update:
        result = measure_overhead(
            preset=preset,
            block=block,
            repeats=repeats,
            checkpoint_every=checkpoint_every,
            snapshots_per_day=snapshots_per_day,
            threads=threads,
            progress=lambda done, total: update(done),
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
