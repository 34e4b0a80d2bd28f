"""`computewatch bench hash`: BLAKE3-over-tensor throughput against the raw blake3 package."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from computewatch.cli.bench import app
from computewatch.crypto._bench import measure_hash_throughput
from computewatch.crypto.errors import ComputewatchError

__all__ = ["bench_hash"]


@app.command("hash")
def bench_hash(
    mib: int = typer.Option(1024, "--mib", help="Buffer size in MiB."),
    repeats: int = typer.Option(3, "--repeats", help="Interleaved repetitions; the best of each is kept."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Hash one buffer with computewatch, raw blake3 and SHA-256; report GB/s and the ratio."""
    try:
        result = measure_hash_throughput(mib, repeats)
    except ComputewatchError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    table = Table(title=f"Hash throughput, {mib} MiB, best of {repeats}")
    table.add_column("hasher")
    table.add_column("GB/s", justify="right")
    table.add_row("computewatch blake3_tensor", f"{result['computewatch_gbps']:.2f}")
    table.add_row("blake3 package (max threads)", f"{result['blake3_gbps']:.2f}")
    table.add_row("hashlib sha256", f"{result['sha256_gbps']:.2f}")
    Console().print(table)
    Console().print(f"ratio computewatch / raw blake3: {result['ratio']:.3f}")
