"""End to end: each example's run is compliant under `computewatch verify` in exact mode; a run
whose recorded data order or learning rate was changed afterwards is a violation.

The `computewatch verify` command is the Verifier's (JSON with ``verdict``; exit 0 compliant,
1 violation). The same tampered runs are also
checked with the Prover's own replay (`computewatch.integrations.check_run`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from computewatch.crypto.canonical import canonical_json
from computewatch.formats.steps import batch_root
from computewatch.integrations import check_run
from computewatch.prover.transcript import Transcript

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RUNS = {"plain_loop": [], "hf_trainer": ["--dropout", "0.1"], "lightning": []}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """Each example run once: its folder and the verify command it printed."""
    out: dict[str, tuple[Path, list[str]]] = {}
    for name, extra in RUNS.items():
        run = tmp_path_factory.mktemp(name) / "run"
        cmd = [sys.executable, str(EXAMPLES / f"{name}.py"), "--out", str(run), "--steps", "6", "--checkpoint-every", "3", *extra]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        printed = shlex.split(done.stdout.strip().splitlines()[-1])
        assert printed[:3] == ["computewatch", "verify", str(run)]
        out[name] = (run, printed)
    return out


def _verify(printed: list[str], run: Path) -> tuple[int, dict]:
    args = [sys.executable, "-m", "computewatch", "verify", str(run), *printed[3:], "--json"]
    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.stdout.strip(), f"verify printed nothing (exit {done.returncode}): {done.stderr[-1000:]}"
    return done.returncode, json.loads(done.stdout)


def _tamper(src: Path, dst: Path, edit: str) -> Path:
    """A copy of the run whose step records were changed afterwards, each change self-consistent
    (batch roots recomputed), as a Prover covering its tracks would."""
    shutil.copytree(src, dst)
    hashes = Transcript(dst).sample_hashes()
    for seg in sorted((dst / "steps").glob("*.jsonl")):
        records = [json.loads(line) for line in seg.read_bytes().splitlines()]
        by_step = {r["step"]: r for r in records}
        if edit == "order" and 1 in by_step and 2 in by_step:  # steps 1 and 2 trade their batches
            by_step[1]["sample_ids"], by_step[2]["sample_ids"] = by_step[2]["sample_ids"], by_step[1]["sample_ids"]
        if edit == "lr" and 3 in by_step:
            by_step[3]["lr"] = by_step[3]["lr"] * 1.5
        for r in records:
            r["batch_root"] = batch_root([hashes[i] for i in r["sample_ids"]]).hex()
        seg.write_bytes(b"".join(canonical_json(r) + b"\n" for r in records))
    return dst


@pytest.mark.parametrize("name", list(RUNS))
def test_example_run_is_compliant(runs: dict, name: str) -> None:
    run, printed = runs[name]
    code, verdict = _verify(printed, run)
    assert verdict["verdict"] == "compliant" and code == 0, [c for c in verdict.get("checks", []) if c.get("passed") is False]
    assert verdict["mode"] == "exact"


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize(("edit", "finding"), [("order", "sample ids are not the committed batch"), ("lr", "recorded lr")])
def test_tampered_run_fails_the_provers_own_replay(runs: dict, name: str, edit: str, finding: str, tmp_path: Path) -> None:
    run = _tamper(runs[name][0], tmp_path / "run", edit)
    problems = check_run(run)["problems"]
    assert any(finding in p for p in problems), problems


def _verify_in_process(printed: list[str], run: Path) -> dict:
    """The printed command's pins, verified by the Python API without the sandbox (the check
    logic is the same; the sandboxed path is exercised above)."""
    from computewatch.crypto.signing import VerifyKey
    from computewatch.verifier import VerifyRequest, verify

    opts: dict[str, list[str]] = {}
    key = None
    for arg in printed[3:]:
        if arg.startswith("--"):
            key = arg
            opts.setdefault(key, [])
        elif key is not None:
            opts[key].append(arg)
    data = dict(item.split("=", 1) for item in opts.get("--data", []))
    return verify(VerifyRequest(
        runs=[run], chips=[Path(p) for p in opts["--chips"]],
        chipmaker_roots=[VerifyKey.load(p) for p in opts["--chipmaker-pub"]],
        prover_keys=[VerifyKey.load(p) for p in opts["--prover-pub"]],
        seed=b"v" * 32, data_dirs=data, in_process=True,
    ))


# One Verifier run per kind of tampering: the data order of the plain loop (the Verifier rebuilds
# it from the seed alone), the learning rate of the HF run (the Verifier steps the program's
# transformers scheduler).
@pytest.mark.parametrize(("name", "edit", "check"), [("plain_loop", "order", "data"), ("hf_trainer", "lr", "hyperparameters")])
def test_tampered_run_is_a_violation(runs: dict, name: str, edit: str, check: str, tmp_path: Path) -> None:
    run = _tamper(runs[name][0], tmp_path / "run", edit)
    verdict = _verify_in_process(runs[name][1], run)
    assert verdict["verdict"] == "violation"
    assert any(c["name"] == check and c["passed"] is False for c in verdict["checks"]), verdict["checks"]
