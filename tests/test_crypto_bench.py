"""`computewatch bench hash` and benchmarks/bench_hash.py report the documented JSON fields."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from computewatch.cli import app
from computewatch.crypto import FormatError
from computewatch.crypto._bench import measure_hash_throughput

_FIELDS = {"bytes", "computewatch_gbps", "blake3_gbps", "sha256_gbps", "ratio"}


def test_cli_json() -> None:
    result = CliRunner().invoke(app, ["bench", "hash", "--mib", "2", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == _FIELDS
    assert data["bytes"] == 2 << 20
    assert data["computewatch_gbps"] > 0 and data["blake3_gbps"] > 0 and data["sha256_gbps"] > 0
    assert data["ratio"] == pytest.approx(data["computewatch_gbps"] / data["blake3_gbps"], rel=1e-2)


def test_cli_rejects_bad_size() -> None:
    result = CliRunner().invoke(app, ["bench", "hash", "--mib", "0"])
    assert result.exit_code == 2  # unusable input, refused before any buffer is allocated
    assert "--mib" in result.output
    with pytest.raises(FormatError, match="repeats"):
        measure_hash_throughput(1, 0)


def test_benchmark_script_writes_json(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_hash.py"
    out = tmp_path / "r.json"
    mod = runpy.run_path(str(script))
    assert mod["main"](["--mib", "1", "--repeats", "1", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())) == _FIELDS
