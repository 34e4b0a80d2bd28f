"""The benchmark scripts that replaced `computewatch bench` (benchmarks/bench_hash.py,
bench_gpu_hash.py, bench_overhead.py): the documented JSON fields, and bad input refused with
one line and exit 2 before any work. The GPU measurement itself needs CUDA (docs/gpu.md)."""

from __future__ import annotations

import json
import runpy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from computewatch.crypto import FormatError

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
_FIELDS = {"bytes", "computewatch_gbps", "blake3_gbps", "sha256_gbps", "ratio"}


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Callable[[list[str]], int]]:
    """`main` of benchmarks/NAME.py, with its folder on sys.path as when it runs as a script."""
    monkeypatch.syspath_prepend(str(_BENCH))
    return lambda name: runpy.run_path(str(_BENCH / f"{name}.py"))["main"]


def test_hash_script_writes_json(script: Callable[[str], Callable[[list[str]], int]], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert script("bench_hash")(["--mib", "2", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data) == _FIELDS
    assert data["bytes"] == 2 << 20
    assert data["computewatch_gbps"] > 0 and data["blake3_gbps"] > 0 and data["sha256_gbps"] > 0
    assert data["ratio"] == pytest.approx(data["computewatch_gbps"] / data["blake3_gbps"], rel=1e-2)


@pytest.mark.parametrize(("args", "message"), [
    (["--mib", "0"], "--mib"), (["--mib", "100000000"], "quarter of this machine's memory"), (["--repeats", "0"], "--repeats"),
])
def test_hash_script_refuses_bad_sizes(script: Callable[[str], Callable[[list[str]], int]], capsys: pytest.CaptureFixture[str],
                                       args: list[str], message: str) -> None:
    assert script("bench_hash")(args) == 2  # unusable input, refused before any buffer is allocated
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_hash_measurement_refuses_no_repeats(script: Callable[[str], Callable[[list[str]], int]]) -> None:
    from _hash import measure_hash_throughput

    with pytest.raises(FormatError, match="repeats"):
        measure_hash_throughput(1, 0)


def test_gpu_script_without_cuda_refuses(script: Callable[[str], Callable[[list[str]], int]], capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script("bench_gpu_hash")(["--gib", "0.01"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--gib", "0"], "--gib"), (["--gib", "nan"], "--gib"), (["--gib", "-1"], "--gib"), (["--repeats", "0"], "--repeats"),
])
def test_gpu_script_refuses_impossible_sizes(script: Callable[[str], Callable[[list[str]], int]], capsys: pytest.CaptureFixture[str],
                                             args: list[str], message: str) -> None:
    assert script("bench_gpu_hash")(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_overhead_script_writes_json(script: Callable[[str], Callable[[list[str]], int]], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["--preset", "mlp", "--block", "5", "--repeats", "2", "--checkpoint-every", "5", "--out", str(out)]
    assert script("bench_overhead")(args) == 0
    doc = json.loads(out.read_text())
    assert {"steps_per_s_plain", "steps_per_s_monitored", "overhead"} <= set(doc)
    assert doc["steps_per_s_plain"] > 0 and doc["steps_per_s_monitored"] > 0
    assert doc["forced_snapshot"]["snapshots"] >= 1 and doc["forced_snapshot"]["mean_stall_s"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--block", "0"], "--block"), (["--repeats", "0"], "--repeats"), (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--block", "1000", "--repeats", "1000"], "at most"), (["--snapshots-per-day", "-1"], "--snapshots-per-day"),
    (["--threads", "0"], "--threads"), (["--threads", "100000"], "--threads"),
])
def test_overhead_script_refuses_bad_settings(script: Callable[[str], Callable[[list[str]], int]], capsys: pytest.CaptureFixture[str],
                                              args: list[str], message: str) -> None:
    assert script("bench_overhead")(["--preset", "mlp", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_cli_has_no_bench_group() -> None:
    from typer.testing import CliRunner

    from computewatch.cli import app

    result = CliRunner().invoke(app, ["bench", "hash"])
    assert result.exit_code == 2 and "No such command" in result.output
