"""The Lightning integration: exact replay in one process and under DDP (two gloo processes, one
chip each), the LightningModule's file bound into the program, refusals of unreplayable steps."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
from _run_config import SHARED

from computewatch.chip import Chip
from computewatch.integrations import IntegrationError, SyntheticTokens, check_run
from computewatch.integrations.lightning import ComputewatchCallback
from computewatch.prover.runner import isolated_torch_state
from computewatch.prover.transcript import Transcript

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lightning_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lightning_example"] = module  # the callback finds the module's file through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lit") / "run"
    with isolated_torch_state():
        assert example.main(["--out", str(out), "--steps", "8", "--checkpoint-every", "3"]) == 0
    return out


def test_single_process_run_replays_exactly(run: Path) -> None:
    report = check_run(run)
    assert report["problems"] == [] and report["segments"] == 3 and report["steps"] == 8


def test_the_modules_own_file_is_part_of_the_program(run: Path) -> None:
    pre = Transcript(run).manifest.precommitment
    hp = pre.hyperparameters
    assert pre.program_entry == "lightning_program:make_program"
    assert hp["module"] == {"module": "user.lightning", "class": "TinyGPT", "hparams": hp["module"]["hparams"]}
    assert hp["module"]["hparams"]["n_layer"] == 2 and hp["trainer"]["accumulate_grad_batches"] == 2
    assert (run / "program" / "user" / "lightning.py").read_bytes() == EXAMPLE.read_bytes()
    assert hp["data"]["batch_size"] == 8 and hp["trainer"]["gradient_clip_val"] == 1.0


def _fit(tmp_path: Path, module: L.LightningModule, **trainer_args: object) -> None:
    cw = ComputewatchCallback(data=SyntheticTokens(0, 32, 32, 64), out=tmp_path / "run", micro_batch_size=2, config=SHARED)
    settings = {"max_steps": 2, "accelerator": "cpu", "devices": 1, "callbacks": [cw], "enable_checkpointing": False, "logger": False,
                "use_distributed_sampler": False, "enable_progress_bar": False, "enable_model_summary": False, **trainer_args}
    with isolated_torch_state():
        L.Trainer(**settings).fit(module, train_dataloaders=cw.dataloader())


def test_steps_the_program_cannot_replay_are_refused(example: ModuleType, tmp_path: Path) -> None:
    class Hooked(example.TinyGPT):
        def on_after_backward(self) -> None:  # could change the gradients
            pass

    with pytest.raises(IntegrationError, match="overrides on_after_backward"):
        _fit(tmp_path, Hooked())
    with pytest.raises(IntegrationError, match="precision='bf16-mixed'"):
        _fit(tmp_path, example.TinyGPT(), precision="bf16-mixed")
    with pytest.raises(IntegrationError, match="max_steps is not set"):
        _fit(tmp_path, example.TinyGPT(), max_steps=-1, max_epochs=1)
    assert not (tmp_path / "run" / "manifest.dsse.json").exists()


def test_ddp_run_records_every_rank_and_replays_exactly(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, str(EXAMPLE), "--out", str(out), "--steps", "6", "--checkpoint-every", "3", "--devices", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith(f"computewatch verify {out} ")
    t = Transcript(out)
    pre = t.manifest.precommitment
    assert t.world_size == 2 and pre.layout.strategy == "ddp" and pre.hyperparameters["data"]["batch_size"] == 16
    for rank in (0, 1):
        assert [e["step"] for e in t.checkpoints(rank)] == [0, 3, 6]
        chip = Chip.open(out / "chips" / f"chip-{rank:04d}")  # every rank's chip logged the one precommitment
        assert [e.body["digest"] for e in chip.log if e.kind == "precommitment"] == [pre.digest().hex()]
    report = check_run(out)  # two gloo processes, DDP, each rank on its part of every batch
    assert report["problems"] == [] and report["world_size"] == 2 and report["segments"] == 2
