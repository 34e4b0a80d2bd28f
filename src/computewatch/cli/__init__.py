"""The `computewatch` command line: one typer app, a module per command group."""

from __future__ import annotations

import typer

from computewatch.cli import bench as _bench

__all__ = ["app", "main"]

app = typer.Typer(
    name="computewatch",
    help="Compute monitoring for large-scale training runs (Shavit 2023).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(_bench.app, name="bench", help="Benchmarks, as ratios against a baseline measured in the same run.")

# Command groups register themselves here, one line each.
from computewatch.cli import demo as _demo  # noqa: E402

app.command("demo")(_demo.demo)


def main() -> None:
    app()
