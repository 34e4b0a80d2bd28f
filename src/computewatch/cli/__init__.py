"""The `computewatch` command line: one typer app, a module per command group, each imported
only when its command runs (cli/_lazy.py)."""

from __future__ import annotations

import typer

from computewatch.cli._lazy import Lazy, LazyGroup

__all__ = ["app", "main"]

app = typer.Typer(
    name="computewatch",
    help="Compute monitoring for large-scale training runs (Shavit 2023).",
    no_args_is_help=True,
    cls=LazyGroup,
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


# Every command, in the order `computewatch --help` lists them; each module is imported when its
# command runs (or its help is asked for), so `sampling table1` never loads torch.
LazyGroup.lazy = {
    "demo": Lazy(
        ("demo",),
        "demo",
        "Run the whole chain on embedded defaults (SQLite, local files, CPU): a fab and a chipmaker make and register "
        "chips; custody passes to Provers A and B; A trains honestly on 4 chips (torch.distributed, one rank per chip); "
        "B hides a covert run; the Verifier commits an inspection plan, inspects the chips, demands an explanation of "
        "every logged snapshot, checks the transcripts in the trusted cluster, applies examples/policies/demo.toml and "
        "writes an HTML report.",
        command_cls="Command",
    ),
    "train": Lazy(
        ("train",),
        "train",
        "Train the demo workload under monitoring and say where the transcript and chip logs are.",
        command_cls="Command",
    ),
    "verify": Lazy(
        ("verify",),
        "verify",
        "Verify runs: explain every snapshot the inspected chips logged, check the transcripts (PoTT) in a trusted "
        "cluster, count the compute, apply the rules.",
        command_cls="verify:VerifyCommand",
    ),
    "challenge": Lazy(
        ("challenge",),
        "challenge",
        "Draw the steps the Prover must answer for, after it has committed (Verifier side).",
        command_cls="Command",
    ),
    "respond": Lazy(
        ("challenge",),
        "respond",
        "Answer a step challenge: the state before each drawn step, recomputed from the nearest checkpoint (Prover side).",
        command_cls="Command",
    ),
    "serve": Lazy(
        ("serve",),
        "serve",
        "Serve the register over HTTP: chips report entries, Provers and inspectors send signed statements, the "
        "dashboard shows the regime.",
        command_cls="Command",
    ),
    "session": Lazy(
        ("session",),
        "session",
        "Sign in to the service's dashboard: prints a session token (valid 12 h by default).",
        command_cls="Command",
    ),
    "chip": Lazy(("chip", "location"), "app", "The ML chip model: manufacture, attest, show and audit chip logs."),
    "transcript": Lazy(("transcript",), "app", "Training transcripts: show, export the hashed transcript."),
    "sampling": Lazy(("sampling",), "app", "How many chips to inspect: Eq. 1, Table 1, Monte Carlo, figures."),
    "registry": Lazy(
        ("registry", "location"),
        "app",
        "The supply chain and chip-owner directory: parties, chips, custody.",
    ),
    "inspect": Lazy(("inspect",), "app", "Inspection plans per monitoring period, inspections, non-compliance."),
    "landmark": Lazy(("location",), "landmark_app", "Landmarks: signed round trips that bound where a chip is."),
    "attack": Lazy(("attack",), "app", "The attack suite: cheating Provers run against the real checks."),
}


def main() -> None:
    from computewatch._threads import prefer_passive_threads

    prefer_passive_threads()  # before anything loads torch: idle OpenMP threads sleep, not spin
    app()
