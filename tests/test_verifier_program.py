"""A lab's own training program, outside the package, verified end to end through the command line.

tests/programs/regression is a training program under the contract of docs/formats.md that reads
its samples from the Prover's data folder. It is monitored with `computewatch.monitor` in a
separate process, then `computewatch verify` checks it in the trusted cluster's real sandbox
(a subprocess per job, no network), with the raw data handed in by `--data RUN_ID=DIR`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from computewatch.formats.manifest import read_manifest
from computewatch.formats.storage import RunStorage

PROGRAMS = Path(__file__).parent / "programs"
TRAIN = """
import sys
sys.path.insert(0, {programs!r})
import computewatch
from regression.train import make_program

hp = {{"batch_size": 8, "lr": 0.05, "momentum": 0.9, "decay_every": 6}}
# The run configuration as a TOML file would give it (RunConfig.from_toml reads the same tables).
config = computewatch.RunConfig.from_dict({{
    "threads": 1,
    "checkpoint": {{"every": 4}},
    "chip": {{"secret_seed": (b"r" * 32).hex(), "snapshots_per_day": 24.0, "seconds_per_step": 1800.0}},
}})
run = computewatch.monitor(make_program, hp, out={out!r}, data_dir={data!r}, samples=128, config=config)
with run:
    for step, batch in run.batches(12):
        run.step(run.program.train_step(run.model, run.optimizer, run.scheduler, batch))
print(run.verify_command())
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    root = tmp_path_factory.mktemp("lab")
    data = root / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(128, 3, generator=g)
    y = x @ torch.tensor([[0.5], [-1.0], [2.0]]) + 0.1 * torch.randn(128, 1, generator=g)
    (data / "records.bin").write_bytes(torch.cat([x, y], dim=1).to(torch.float32).numpy().astype("<f4").tobytes())
    # Relative paths, as a lab would type them: the run under runs/lab, the data in data/.
    out = root / "runs" / "lab"
    done = subprocess.run([sys.executable, "-c", TRAIN.format(programs=str(PROGRAMS), out="runs/lab", data="data")], cwd=root,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = read_manifest(RunStorage(out, create=False)).precommitment.run_id
    return {"out": out, "data": data, "run_id": run_id, "root": root, "printed": done.stdout.strip().splitlines()[-1]}


def _verify_in_process(lab: dict, data: Path | None = None, **options) -> dict:
    """The same pins through the Python API (the judge in this process, the program in the
    sandbox)."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.verifier import VerifyRequest, verify

    out = Path(lab["out"])
    return verify(VerifyRequest(
        runs=[out], chips=[out / "chips"],
        chipmaker_roots=[VerifyKey.load(out / "chips" / "chipmaker" / "chipmaker.pub")],
        prover_keys=[VerifyKey.load(out / "keys" / "prover.pub")],
        seed=b"lab" * 11, data_dirs={lab["run_id"]: str(data or lab["data"])}, **options,
    ))


def test_the_run_records_the_programs_files_outside_the_package(lab: dict) -> None:
    files = sorted(p.name for p in (Path(lab["out"]) / "program").rglob("*.py"))
    assert files == ["model.py", "train.py"]


def test_the_printed_verify_command_works_verbatim_with_relative_paths_in_the_sandbox(lab: dict, tmp_path: Path) -> None:
    import shlex

    printed = shlex.split(lab["printed"])
    assert printed[:3] == ["computewatch", "verify", "runs/lab"] and "runs/lab/chips" in printed, printed
    html = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "computewatch", *printed[1:], "--json", "--html", str(html)], cwd=lab["root"],
                          capture_output=True, text=True, timeout=600)
    code, doc = proc.returncode, json.loads(proc.stdout)
    assert code == 0 and doc["verdict"] == "compliant", doc["checks"]
    assert doc["snapshots"]["explained"] == doc["snapshots"]["logged"] > 0
    assert doc["isolation"].startswith("bubblewrap sandbox")
    assert html.read_text().startswith("<!DOCTYPE html>") and doc["verdict"] in html.read_text()


def test_sample_bytes_that_do_not_hash_to_the_commitment_are_a_data_violation(lab: dict, tmp_path: Path) -> None:
    forged = tmp_path / "data"
    forged.mkdir()
    raw = (Path(lab["data"]) / "records.bin").read_bytes()
    raw = bytes(b ^ 1 if i % 16 == 0 else b for i, b in enumerate(raw))  # every record differs
    (forged / "records.bin").write_bytes(raw)
    doc = _verify_in_process(lab, data=forged, segments="all")
    assert doc["verdict"] == "violation"
    assert any(c["name"] == "data" and c["passed"] is False for c in doc["checks"]), doc["checks"]


def test_an_edited_program_file_is_refused_before_it_is_imported(lab: dict, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(lab["out"], copy)
    model = copy / "program" / "model.py"
    model.write_text(model.read_text() + "\nimport socket  # a program that phones home\n")
    doc = _verify_in_process({**lab, "out": copy}, segments=0, sandbox=False)  # the judge refuses it: nothing runs
    assert doc["verdict"] == "violation" and doc["isolation"].startswith("NO sandbox")
    assert any("code digest" in c["detail"] for c in doc["checks"] if c["passed"] is False), doc["checks"]
