"""`computewatch bench hash`: BLAKE3-over-tensor throughput against the raw blake3 package."""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console
from rich.table import Table

from computewatch.cli._common import FLAG, Command, fail, guard
from computewatch.cli.bench import app

__all__ = ["bench_hash", "max_buffer_mib"]


def max_buffer_mib() -> int:
    """The largest buffer worth hashing here: a quarter of physical memory (at least 1 MiB)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 14
    return max(1, total // 4 >> 20)


@app.command("hash", cls=Command)
def bench_hash(
    mib: int = typer.Option(1024, "--mib", min=1, help="Buffer size in MiB (at most a quarter of this machine's memory)."),
    repeats: int = typer.Option(3, "--repeats", min=1, max=100, help="Interleaved repetitions; the best of each is kept."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print the result as JSON (also on failure)."),
) -> None:
    """Hash one buffer with computewatch, raw blake3 and SHA-256; report GB/s and the ratio."""
    if mib > max_buffer_mib():
        fail(f"--mib {mib:,} is more than a quarter of this machine's memory ({max_buffer_mib():,} MiB)", as_json=as_json)
    from computewatch.crypto._bench import measure_hash_throughput

    with guard(as_json=as_json):
        result = measure_hash_throughput(mib, repeats)
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
