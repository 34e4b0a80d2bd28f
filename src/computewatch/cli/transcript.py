"""`computewatch transcript ...`: read a run directory back, and export its hashed transcript.

Exit status (docs/cli.md): 2 when the location holds no transcript (or cannot be read),
1 when the transcript fails a check (a signature, a digest, a record that contradicts another).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from computewatch.cli._common import (
    EXIT_FINDING,
    FLAG,
    Command,
    Group,
    check_output_file,
    check_storage_url,
    fail,
    guard,
    out,
    write_output,
)

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, cls=Group)


def _open(run_dir: str):  # -> Transcript (imported lazily: torch)
    """The transcript at `run_dir`: 2 when there is none there, 1 when it fails its own checks."""
    from computewatch.crypto.errors import ComputewatchError
    from computewatch.formats.manifest import MANIFEST_FILE
    from computewatch.formats.storage import RunStorage
    from computewatch.prover.transcript import Transcript

    check_storage_url(run_dir)
    with guard():
        storage = RunStorage(run_dir, create=False)
        if not storage.exists(MANIFEST_FILE):
            fail(f"{run_dir} holds no transcript (no {MANIFEST_FILE})")
    try:
        return Transcript(run_dir)
    except ComputewatchError as exc:
        fail(f"{run_dir}: {exc}", EXIT_FINDING)


@app.command("show", cls=Command)
def show(
    run_dir: str = typer.Argument(..., help="Run directory or fsspec URL (e.g. s3://bucket/run, with s3fs installed)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check every record, object and checkpoint while reading."),
) -> None:
    """Summarise a transcript: run, chips, steps, checkpoints, snapshots.

    With --verify (the default) the transcript is checked as far as it can be on its own (see
    the "not verified" lines); exit status 1 if it fails."""
    from rich.markup import escape
    from rich.table import Table

    from computewatch.crypto.errors import ComputewatchError

    t = _open(run_dir)
    try:
        summary = t.summary()
        counts = t.verify(data_order=True) if verify else None
    except ComputewatchError as exc:
        fail(f"{run_dir}: {exc}", EXIT_FINDING)
    table = Table(title=f"transcript {summary['run_id']}", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # digests and paths whole, wrapped, never cut
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), escape(_plain(value)))
    if counts is not None:
        checked = (
            f"{counts['steps']} steps (batch roots, data order), {counts['checkpoints']} checkpoints "
            f"({counts['rng_checked']} step RNG states), {counts['snapshots']} snapshots, {counts['samples']} samples"
        )
        table.add_row("verified", checked)
        for item in t.not_verified(data_order=True):
            table.add_row("not verified", escape(item))
    else:
        table.add_row("verified", "nothing (--no-verify)")
    out.print(table)


def _plain(value: object) -> str:
    """A summary value as text: lists joined, a mapping as "key: value; ...", no Python reprs."""
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"rank {k}: {_plain(v)}" if isinstance(k, int) else f"{k}: {_plain(v)}" for k, v in value.items())
    return str(value)


@app.command("export-hashes", cls=Command)
def export_hashes_cmd(
    run_dir: Annotated[str, typer.Argument(help="Run directory or fsspec URL.")],
    out_file: Annotated[Path, typer.Option("--out", help="File to write the hashed transcript (canonical JSON) to; never overwritten.")],
    signed: bool = typer.Option(False, "--signed", metavar=FLAG, help="Write a DSSE envelope signed with the run's Prover key instead."),
    force: bool = typer.Option(False, "--force", metavar=FLAG, help="Replace an existing --out file."),
) -> None:
    """Write the hashed transcript (digests only, Appendix D step 2)."""
    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.errors import ComputewatchError
    from computewatch.formats.manifest import prover_key
    from computewatch.formats.storage import RunStorage
    from computewatch.prover.export import export_hashes, sign_export

    check_output_file(out_file, overwrite=force, force="--force")
    _open(run_dir)
    try:
        doc = export_hashes(run_dir)
    except ComputewatchError as exc:
        fail(f"{run_dir}: {exc}", EXIT_FINDING)
    with guard():
        data = sign_export(doc, prover_key(RunStorage(run_dir, create=False))).to_json() if signed else canonical_json(doc)
    write_output(out_file, data)
    out.print(f"hashed transcript of run {doc['run_id']}: {out_file} ({doc['steps']['count']} steps, "
              f"{len(doc['checkpoints'])} checkpoints, {len(doc['snapshots'])} snapshots)")
