"""`computewatch.monitor` on the nanoGPT-style example: exact replay, committed order, resume, errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from _run_config import SHARED

import computewatch
from computewatch.chip import Chip
from computewatch.crypto.errors import FormatError
from computewatch.formats.seed import batches, derive_run_seed
from computewatch.formats.storage import StoreError
from computewatch.integrations import IntegrationError, check_run
from computewatch.prover.config import CheckpointConfig, RunConfig
from computewatch.prover.runner import isolated_torch_state
from computewatch.prover.transcript import Transcript

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_loop.py"
NO_CHIPS = SHARED  # the run configuration every entry point's tests pass


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plain_loop", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["plain_loop"] = module  # monitor() finds the program's file through its module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    with isolated_torch_state():
        assert example.main(["--out", str(out), "--steps", "12", "--checkpoint-every", "5"]) == 0
    return out


def _hp(steps: int) -> dict:
    return {
        "model": {"vocab_size": 16, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16},
        "data": {"seed": 1, "size": 64, "vocab": 16},
        "batch_size": 4,
        "lr": 1e-2,
        "warmup": 2,
        "steps": steps,
    }


def test_example_run_replays_exactly(run: Path) -> None:
    report = check_run(run)
    assert report["problems"] == [] and report["segments"] == 3 and report["steps"] == 12  # W0, 5, 10, 12


def test_example_run_records_the_committed_order_program_and_environment(run: Path) -> None:
    t = Transcript(run)
    pre = t.manifest.precommitment
    assert pre.program_entry == "plain_loop:Program"
    assert sorted(p.name for p in (run / "program").iterdir()) == ["plain_loop.py"]
    assert (run / "program" / "plain_loop.py").read_bytes() == EXAMPLE.read_bytes()
    assert pre.environment["threads"] == 1 and pre.environment["deterministic"] is True
    seed = derive_run_seed(bytes.fromhex(pre.dataset["root"]), pre.nonce)
    committed = [list(ids) for _, ids in batches(seed, pre.dataset["size"], 8, 12)]
    assert [list(r.sample_ids) for r in t.steps()] == committed
    assert all(r.loss is not None for r in t.steps())
    # The chip logged this run's precommitment before any snapshot.
    chip = Chip.open(run / "chips" / "chip-0000")
    assert any(e.kind == "precommitment" and e.body["digest"] == pre.digest().hex() for e in chip.log)
    assert (run / "keys" / "prover.pub").is_file()


def test_example_prints_the_verify_command(run: Path, example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    out = run.parent / "again"
    with isolated_torch_state():
        example.main(["--out", str(out), "--steps", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"computewatch verify {out} --chips {out}/chips") and f"--prover-pub {out}/keys/prover.pub" in line


def test_resumed_run_equals_a_straight_run(example: ModuleType, tmp_path: Path) -> None:
    nonce = b"integrations-resume"
    with isolated_torch_state():
        config = RunConfig(nonce=nonce, threads=1, checkpoint=CheckpointConfig(every=2))
        straight = computewatch.monitor(example.Program, _hp(6), out=tmp_path / "straight", config=config)
        with straight:
            for _, batch in straight.batches(6):
                straight.step(straight.program.train_step(straight.model, straight.optimizer, straight.scheduler, batch))
        first = computewatch.monitor(example.Program, _hp(6), out=tmp_path / "split", config=config)
        with first:
            for _, batch in first.batches(3):
                first.step(first.program.train_step(first.model, first.optimizer, first.scheduler, batch))
        # The resumed run takes its nonce from the transcript (the config's is not used).
        second = computewatch.monitor(example.Program, _hp(6), out=tmp_path / "split", config=config.replace(resume=True, nonce=None))
        with second:
            assert second.start_step == 3
            for _, batch in second.batches(6):
                second.step(second.program.train_step(second.model, second.optimizer, second.scheduler, batch))
    a, b = Transcript(tmp_path / "straight"), Transcript(tmp_path / "split")
    assert [e["digest"] for e in a.checkpoints()][-1] == [e["digest"] for e in b.checkpoints()][-1]
    assert check_run(tmp_path / "split")["problems"] == []


class _NoLength:
    batch_size = 2

    def __init__(self, hp: dict, data_dir: object = None) -> None: ...

    def sample(self, i: int) -> bytes:
        return bytes([i])

    build_model = build_optimizer = build_scheduler = collate = train_step = loss = sample


class _NotAProgram:
    def __init__(self, hp: dict, data_dir: object = None) -> None: ...


class _DefaultInit:
    """A program whose W0 comes from PyTorch's default initialisation (the global RNG)."""

    batch_size = 2

    def __init__(self, hyperparameters: dict, data_dir: Path | None = None) -> None:
        self.hp = hyperparameters

    def __len__(self) -> int:
        return 4

    def sample(self, index: int) -> bytes:
        return bytes([index, index])

    def build_model(self, generator: torch.Generator) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.1)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> None:
        return None

    def collate(self, samples: list[bytes]) -> torch.Tensor:
        return torch.tensor([list(s) for s in samples], dtype=torch.float32)

    def loss(self, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return model(batch).pow(2).mean()

    def train_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: None, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = self.loss(model, batch)
        loss.backward()
        optimizer.step()
        return float(loss.detach())


class _SeededInit(_DefaultInit):
    """The same model with W0 drawn from the committed seed's generator: accepted."""

    def build_model(self, generator: torch.Generator) -> torch.nn.Module:
        from computewatch.integrations.program.init import init_weights

        model = super().build_model(generator)
        init_weights(model, generator, 0.02)
        return model


def test_w0_from_pytorchs_default_init_is_refused_before_the_first_step(tmp_path: Path) -> None:
    with isolated_torch_state():
        with pytest.raises(IntegrationError, match=r"W0: '0\.weight' is not what the committed seed gives.*init_weights"):
            computewatch.monitor(_DefaultInit, {}, out=tmp_path / "default", config=NO_CHIPS)
        m = computewatch.monitor(_SeededInit, {}, out=tmp_path / "seeded", config=NO_CHIPS)
        with m:
            for _, batch in m.batches(2):
                m.step(m.program.train_step(m.model, m.optimizer, m.scheduler, batch))
    assert check_run(tmp_path / "seeded")["problems"] == []
    assert not (tmp_path / "default").exists() or not any((tmp_path / "default").iterdir())


def test_monitor_refuses_what_it_cannot_record(example: ModuleType, run: Path, tmp_path: Path) -> None:
    with pytest.raises(IntegrationError, match="pass samples=N"):
        computewatch.monitor(_NoLength, {}, out=tmp_path / "a", config=NO_CHIPS)
    with pytest.raises(IntegrationError, match="without build_model"):
        computewatch.monitor(_NotAProgram, {}, out=tmp_path / "b", config=NO_CHIPS)
    with pytest.raises(StoreError, match="already holds a run"):
        computewatch.monitor(example.Program, _hp(2), out=run)
    with isolated_torch_state():
        m = computewatch.monitor(example.Program, _hp(2), out=tmp_path / "c", config=NO_CHIPS)
        with m, pytest.raises(FormatError, match="before a batch"):
            m.step(1.0)
