"""The `computewatch` command line: one typer app, a module per command group."""

from __future__ import annotations

import typer

from computewatch.cli import bench as _bench
from computewatch.cli._common import Group

__all__ = ["app", "main"]

app = typer.Typer(
    name="computewatch",
    help="Compute monitoring for large-scale training runs (Shavit 2023).",
    no_args_is_help=True,
    cls=Group,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"computewatch {version('computewatch')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("computewatch (not installed: version unknown)")
        raise typer.Exit(0)


@app.callback()
def _main(
    show_version: bool = typer.Option(False, "--version", metavar="", is_eager=True, callback=_version, help="Print the version and exit."),
) -> None:
    """Compute monitoring for large-scale training runs (Shavit 2023)."""
app.add_typer(_bench.app, name="bench", help="Benchmarks, as ratios against a baseline measured in the same run.")

# Command groups register themselves here, one line each.
from computewatch.cli import attack as _attack  # noqa: E402
from computewatch.cli import bench_gpu as _bench_gpu  # noqa: E402,F401
from computewatch.cli import bench_hash as _bench_hash  # noqa: E402,F401
from computewatch.cli import bench_overhead as _bench_overhead  # noqa: E402,F401
from computewatch.cli import challenge as _challenge  # noqa: E402
from computewatch.cli import chip as _chip  # noqa: E402
from computewatch.cli import demo as _demo  # noqa: E402
from computewatch.cli import exposure as _exposure  # noqa: E402,F401
from computewatch.cli import inspect as _inspect  # noqa: E402
from computewatch.cli import location as _location  # noqa: E402
from computewatch.cli import registry as _registry  # noqa: E402
from computewatch.cli import sampling as _sampling  # noqa: E402
from computewatch.cli import serve as _serve  # noqa: E402
from computewatch.cli import session as _session  # noqa: E402
from computewatch.cli import train as _train  # noqa: E402
from computewatch.cli import transcript as _transcript  # noqa: E402
from computewatch.cli import verify as _verify  # noqa: E402
from computewatch.cli._common import Command  # noqa: E402

app.command("demo", cls=Command)(_demo.demo)
app.add_typer(_chip.app, name="chip", help="The ML chip model: manufacture, attest, show and audit chip logs.")
app.command("train", cls=Command)(_train.train)
app.add_typer(_transcript.app, name="transcript", help="Training transcripts: show, export the hashed transcript.")
app.add_typer(_sampling.app, name="sampling", help="How many chips to inspect: Eq. 1, Table 1, Monte Carlo, figures.")
app.command("verify", cls=_verify.VerifyCommand)(_verify.verify)
app.command("challenge", cls=Command)(_challenge.challenge)
app.command("respond", cls=Command)(_challenge.respond)
app.add_typer(_registry.app, name="registry", help="The supply chain and chip-owner directory: parties, chips, custody.")
app.add_typer(_inspect.app, name="inspect", help="Inspection plans per monitoring period, inspections, non-compliance.")
app.add_typer(_location.landmark_app, name="landmark", help="Landmarks: signed round trips that bound where a chip is.")
app.add_typer(_attack.app, name="attack", help="The attack suite: cheating Provers run against the real checks.")
app.command("serve", cls=Command)(_serve.serve)
app.command("session", cls=Command)(_session.session)


def main() -> None:
    app()
