"""`computewatch transcript ...`: read a run directory back, and export its hashed transcript."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)


@app.command("show")
def show(
    run_dir: str = typer.Argument(..., help="Run directory or fsspec URL."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Re-hash every object and shard while reading."),
) -> None:
    """Summarise a transcript: run, chips, steps, checkpoints, snapshots."""
    from rich.console import Console
    from rich.table import Table

    from computewatch.crypto.errors import ComputewatchError
    from computewatch.prover.transcript import Transcript

    console = Console()
    try:
        t = Transcript(run_dir)
        summary = t.summary()
        counts = t.verify() if verify else None
    except ComputewatchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table(title=f"transcript {summary['run_id']}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    if counts is not None:
        table.add_row("verified", ", ".join(f"{v} {k}" for k, v in counts.items()))
    console.print(table)


@app.command("export-hashes")
def export_hashes_cmd(
    run_dir: str = typer.Argument(..., help="Run directory or fsspec URL."),
    out: Path = typer.Option(..., "--out", help="File to write the hashed transcript (canonical JSON) to."),
    signed: bool = typer.Option(False, "--signed", help="Write a DSSE envelope signed with the run's Prover key instead."),
) -> None:
    """Write the hashed transcript (digests only, Appendix D step 2)."""
    from rich.console import Console

    from computewatch.crypto.atomic import atomic_write
    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.errors import ComputewatchError
    from computewatch.formats.manifest import prover_key
    from computewatch.formats.storage import RunStorage
    from computewatch.prover.export import export_hashes, sign_export

    console = Console()
    try:
        doc = export_hashes(run_dir)
        data = sign_export(doc, prover_key(RunStorage(run_dir, create=False))).to_json() if signed else canonical_json(doc)
        atomic_write(out, data)
    except (ComputewatchError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"hashed transcript of run {doc['run_id']}: {out} ({doc['steps']['count']} steps, "
                  f"{len(doc['checkpoints'])} checkpoints, {len(doc['snapshots'])} snapshots)")
