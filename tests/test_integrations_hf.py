"""The Hugging Face Trainer integration: exact replay of a GPT-2 run with gradient accumulation
and dropout, the committed order and W0, and refusals of what the program cannot replay."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from _run_config import SHARED
from transformers import GPT2Config, GPT2LMHeadModel

from computewatch.formats.seed import batches, init_generator
from computewatch.integrations import IntegrationError, SyntheticTokens, check_run
from computewatch.integrations.hf import MonitoredTrainer, monitored_args
from computewatch.prover.runner import isolated_torch_state
from computewatch.prover.transcript import Transcript

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hf_trainer.py"


def _config() -> GPT2Config:
    return GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)


def _data() -> SyntheticTokens:
    return SyntheticTokens(seed=3, size=32, block_size=8, vocab_size=32)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("hf_trainer_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("hf") / "run"
    with isolated_torch_state():
        assert module.main(["--out", str(out), "--steps", "8", "--checkpoint-every", "3"]) == 0
    return out


def test_trainer_run_replays_exactly_with_accumulation_and_dropout(run: Path) -> None:
    pre = Transcript(run).manifest.precommitment
    hp = pre.hyperparameters
    assert hp["trainer"]["gradient_accumulation_steps"] == 2 and hp["model"]["config"]["resid_pdrop"] == 0.1
    report = check_run(run)  # W0, data order, lr, loss and every segment's weights, bit for bit
    assert report["problems"] == [] and report["segments"] == 3 and report["steps"] == 8


def test_trainer_run_records_the_committed_order_and_no_trainer_checkpoints(run: Path) -> None:
    t = Transcript(run)
    pre = t.manifest.precommitment
    assert pre.program_entry == "hf_program:make_program"
    assert {p.name for p in (run / "program").iterdir()} >= {"hf_program.py", "data.py", "init.py"}
    committed = [list(ids) for _, ids in batches(pre.seed, pre.dataset["size"], 8, 8)]
    records = t.steps()
    assert [list(r.sample_ids) for r in records] == committed
    lrs = [r.lr for r in records]
    assert lrs[0] < lrs[4] and all(r.loss is not None and r.loss > 0 for r in records)  # warmup; a loss per step
    assert not list((run / "trainer").glob("checkpoint-*"))  # checkpoints went through the Recorder only


def _trainer(tmp_path: Path, cls: type = MonitoredTrainer, model: torch.nn.Module | None = None, **args: object) -> MonitoredTrainer:
    settings = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 2, **args}
    return cls(
        model=model if model is not None else GPT2LMHeadModel(_config()),
        args=monitored_args(tmp_path / "trainer", **settings),
        data=_data(),
        out=tmp_path / "run",
        config=SHARED,
    )


def test_w0_comes_from_the_committed_seed_not_the_model_given(tmp_path: Path) -> None:
    with isolated_torch_state():
        trainer = _trainer(tmp_path, max_steps=1)
        trainer.train()
        first = Transcript(tmp_path / "run").checkpoint(0).model
        expected = trainer.program.build_model(init_generator(trainer.seed)).state_dict()
    assert set(first) == set(expected) and all(torch.equal(first[k], expected[k]) for k in expected)


class _OwnGPT2(GPT2LMHeadModel):
    pass


class _OtherBetas(MonitoredTrainer):
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model)
        for group in optimizer.param_groups:
            group["betas"] = (0.8, 0.9)  # what TrainingArguments say is (0.9, 0.999)
        return optimizer


class _ShuffledOrder(MonitoredTrainer):
    def _get_train_sampler(self, train_dataset: object = None) -> torch.utils.data.Sampler[int]:
        return torch.utils.data.SequentialSampler(range(len(self.sampler)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"save_strategy": "steps"}, "save_strategy must be 'no'"),
        ({"max_steps": -1, "num_train_epochs": 1}, "max_steps is not set"),
        ({"optim": "sgd"}, "optim='sgd'"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor"),
    ],
)
def test_trainer_settings_the_program_cannot_replay_are_refused(tmp_path: Path, args: dict, message: str) -> None:
    with pytest.raises(IntegrationError, match=message):
        _trainer(tmp_path, **args)
    assert not (tmp_path / "run").exists()


def test_custom_model_classes_and_own_data_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(IntegrationError, match="not a transformers model class"):
        _trainer(tmp_path, model=_OwnGPT2(_config()))
    with pytest.raises(IntegrationError, match="sets train_dataset itself"):
        MonitoredTrainer(model=GPT2LMHeadModel(_config()), args=monitored_args(tmp_path, max_steps=1), data=_data(), out=tmp_path, train_dataset=[1])


def test_an_optimizer_the_program_does_not_rebuild_is_refused_before_recording(tmp_path: Path) -> None:
    with isolated_torch_state():
        trainer = _trainer(tmp_path, cls=_OtherBetas)
        with pytest.raises(IntegrationError, match="betas"):
            trainer.train()
    assert not (tmp_path / "run" / "manifest.dsse.json").exists()


def test_a_model_w0_the_verifier_cannot_rebuild_is_refused_before_the_first_step(tmp_path: Path) -> None:
    """A buffer the lab set after construction (here a random one) is not what the Verifier's
    rebuild from class and config gives: refused at train start, naming it, not at verification."""
    with isolated_torch_state():
        trainer = _trainer(tmp_path)
        trainer.model.register_buffer("calibration", torch.randn(4))
        with pytest.raises(IntegrationError, match=r"W0: the model holds other tensors .*calibration.*config alone"):
            trainer.train()
    assert not (tmp_path / "run" / "manifest.dsse.json").exists()


def test_a_data_order_other_than_the_committed_one_stops_the_run(tmp_path: Path) -> None:
    with isolated_torch_state():
        trainer = _trainer(tmp_path, cls=_ShuffledOrder)
        with pytest.raises(IntegrationError, match="step 0: the Trainer drew samples"):
            trainer.train()


def test_a_labs_own_token_blocks_replay_from_its_data_folder(tmp_path: Path) -> None:
    from computewatch.integrations import encode_block, write_sample_file

    blocks = [[(7 * i + j) % 32 for j in range(8)] for i in range(16)]
    source = write_sample_file((encode_block(b) for b in blocks), tmp_path / "data")
    with isolated_torch_state():
        trainer = MonitoredTrainer(
            model=GPT2LMHeadModel(_config()),
            args=monitored_args(tmp_path / "trainer", per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=4),
            data=source, out=tmp_path / "run", config=SHARED,
        )  # fmt: skip
        trainer.train()
    hp = Transcript(tmp_path / "run").manifest.precommitment.hyperparameters
    assert hp["data"]["source"] == {"kind": "sample-file", "file": "samples.jsonl", "size": 16}
    assert f"--data {trainer.recording.run_id}={tmp_path / 'data'}" in trainer.verify_command()
    assert check_run(tmp_path / "run", tmp_path / "data")["problems"] == []
    with pytest.raises(ValueError, match="pass that folder as data_dir"):
        check_run(tmp_path / "run")
