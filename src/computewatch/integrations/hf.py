"""Monitoring a Hugging Face ``transformers.Trainer`` run (``pip install computewatch[hf]``).

    from computewatch.integrations.hf import MonitoredTrainer, monitored_args
    from computewatch.integrations.datasets import SyntheticTokens

    args = monitored_args("runs/hf/trainer", per_device_train_batch_size=8,
                          gradient_accumulation_steps=2, learning_rate=1e-3, max_steps=200)
    trainer = MonitoredTrainer(model=GPT2LMHeadModel(config), args=args,
                               data=SyntheticTokens(0, 1024, 32, 64), out="runs/hf",
                               config=RunConfig(checkpoint=CheckpointConfig(every=50)))
    trainer.train()

`MonitoredTrainer` is a ``Trainer`` whose training data are the committed samples (bytes,
collated by the program's own `collate_micro`), drawn by a sampler in the committed order
(`computewatch.formats.seed.batches` over global batches of ``per_device_train_batch_size x
gradient_accumulation_steps`` samples), and whose `ComputewatchCallback`:

- at ``on_train_begin``: fixes the replay environment, overwrites every parameter with W0 from
  the committed seed (`program.init.init_weights`), checks that the Trainer's optimizer and
  scheduler are what the precommitted hyperparameters rebuild, and starts the Recorder (manifest,
  chip precommitment, W0 checkpoint);
- at ``on_step_begin``: pins the global RNG to the state recorded after the previous step;
- at ``on_step_end`` (after the optimizer and scheduler steps): checks that the sampler handed
  the Trainer exactly the step's committed sample ids, and records them with the step's loss and
  learning rate; checkpoints go through the Recorder (the Trainer's own saving is off).

The run is replayed by the training program ``hf_program:make_program`` of
`computewatch.integrations.program` (one Trainer optimizer step per ``train_step``), whose files
the run's ``program/`` folder holds. Single process, CPU, fp32; settings the program does not
model are refused before anything is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import Trainer, TrainerCallback, TrainingArguments

from computewatch.formats.seed import (
    batches,
    derive_run_seed,
    init_generator,
    new_nonce,
)
from computewatch.integrations.datasets import CommittedSampler, CommittedSamples
from computewatch.integrations.program.data import ENCODING, collate_micro
from computewatch.integrations.program.hf_program import PROGRAM, HFProgram
from computewatch.integrations.program.init import init_spec, init_weights
from computewatch.integrations.session import (
    IntegrationError,
    MonitorOptions,
    RunRecording,
    check_same_optimizer,
    check_w0,
    commit_samples,
    seed_process,
)
from computewatch.prover.config import LEGACY_FIELDS, RunConfig, resolve_config

__all__ = ["ENTRY", "ComputewatchCallback", "MonitoredTrainer", "monitored_args"]

ENTRY = "hf_program:make_program"
_PROGRAM_DIR = Path(__file__).resolve().parent / "program"
# The flat keyword options MonitoredTrainer took before `RunConfig` (deprecated).
_LEGACY_OPTIONS = ("chips", "checkpoint_every", "threads", "nonce", "snapshots_per_day", "chip_seconds_per_step", "chip_secret_seed")
assert set(_LEGACY_OPTIONS) <= set(LEGACY_FIELDS)


def monitored_args(output_dir: str | os.PathLike[str], **kwargs: Any) -> TrainingArguments:
    """``TrainingArguments`` with what monitoring needs by default: no Trainer checkpoints
    (the Recorder keeps them), no reporting or hub, no data-loader workers, the CPU."""
    defaults: dict[str, Any] = {
        "save_strategy": "no",
        "report_to": "none",
        "push_to_hub": False,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "use_cpu": True,
        "disable_tqdm": True,
        "logging_strategy": "no",
    }
    return TrainingArguments(output_dir=str(output_dir), **{**defaults, **kwargs})


def _optim(args: TrainingArguments) -> str:
    return str(getattr(args.optim, "value", args.optim))


def _check_args(args: TrainingArguments) -> None:
    problems = []
    if args.world_size != 1:
        problems.append(f"world_size={args.world_size} (the HF integration records single-process runs)")
    if args.max_steps is None or args.max_steps <= 0:
        problems.append("max_steps is not set (the data order and schedule are committed for a known number of steps)")
    if str(getattr(args.save_strategy, "value", args.save_strategy)) != "no":
        problems.append("save_strategy must be 'no' (checkpoints go through the Recorder)")
    if args.fp16 or args.bf16:
        problems.append("fp16/bf16 (exact replay is fp32)")
    if _optim(args) not in ("adamw_torch", "adamw_torch_fused"):
        problems.append(f"optim={_optim(args)!r} (the program replays 'adamw_torch' and 'adamw_torch_fused')")
    if args.label_smoothing_factor:
        problems.append("label_smoothing_factor")
    if args.dataloader_num_workers:
        problems.append("dataloader_num_workers > 0")
    if getattr(args, "neftune_noise_alpha", None) is not None:
        problems.append("neftune_noise_alpha")
    if getattr(args, "use_liger_kernel", False) or getattr(args, "torch_compile", False):
        problems.append("use_liger_kernel/torch_compile")
    if getattr(args, "gradient_checkpointing", False) or getattr(args, "activation_checkpointing", False):
        problems.append("activation checkpointing")
    if args.push_to_hub:
        problems.append("push_to_hub (no hub access)")
    if str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) in ("reduce_lr_on_plateau", "greedy"):
        problems.append(f"lr_scheduler_type={args.lr_scheduler_type!r} (depends on metrics, not on the step)")
    if args.device.type != "cpu":
        problems.append(f"device {args.device} (exact replay is on the CPU; pass use_cpu=True)")
    if problems:
        raise IntegrationError("MonitoredTrainer cannot record this run replayably: " + "; ".join(problems) + " (monitored_args() sets workable defaults)")


_W0_FIX = (
    "MonitoredTrainer overwrites every parameter with W0 from the committed seed, and the Verifier rebuilds "
    "the model from its class and config: build the model from its config alone (Model(config), not "
    "from_pretrained or a model whose buffers were changed after construction)"
)


def _as_dict(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """A TrainingArguments dict field, which the command line may give as a JSON string."""
    return dict(json.loads(value) if isinstance(value, str) else value or {})


class MonitoredTrainer(Trainer):
    """A ``transformers.Trainer`` whose run is recorded under monitoring (see the module doc).

    `data` is the committed dataset: an object with ``sample(i) -> bytes`` (token blocks,
    ``computewatch/token-block-v1``), ``__len__`` and ``spec`` (its record in the
    hyperparameters), such as `SyntheticTokens` or a `SampleFile`. `out` is the run folder (the
    transcript; chips under ``out/chips`` unless ``config.chip.dir`` names a folder); `init_std` the
    standard deviation of W0; `config` how the run is recorded (`RunConfig`; one process only).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: TrainingArguments,
        *,
        data: Any,
        out: str | os.PathLike[str],
        init_std: float = 0.02,
        config: RunConfig | None = None,
        **kwargs: Any,
    ) -> None:
        # The flat run options of before (deprecated) are told apart from the Trainer's own kwargs.
        legacy = {k: kwargs.pop(k) for k in _LEGACY_OPTIONS if k in kwargs}
        config = resolve_config("MonitoredTrainer", config, legacy, _LEGACY_OPTIONS)
        config.distributed.place(0, 1, "MonitoredTrainer (one process)")
        for name in ("train_dataset", "data_collator", "optimizers", "optimizer_cls_and_kwargs", "compute_loss_func", "model_init"):
            if kwargs.get(name) is not None:
                raise IntegrationError(f"MonitoredTrainer sets {name} itself (the committed data and the replayable step); do not pass it")
        _check_args(args)
        if not isinstance(model, transformers.PreTrainedModel) or type(model) is not getattr(transformers, type(model).__name__, None):
            raise IntegrationError(f"{type(model).__name__} is not a transformers model class; the HF program rebuilds models of transformers' own classes")
        if any(p.dtype != torch.float32 or not p.requires_grad for p in model.parameters()):
            raise IntegrationError("every parameter must be float32 and trainable (exact replay is fp32, full training)")
        self.config = dataclasses.replace(config, threads=config.threads or torch.get_num_threads())
        self.monitor_options = MonitorOptions(Path(out), self.config)
        super().__init__(model=model, args=args, train_dataset=CommittedSamples(data), data_collator=collate_micro, **kwargs)
        if self.loss_is_scaled_for_ga is not None:
            raise IntegrationError("loss_is_scaled_for_ga is set: the HF program replays the Trainer's own loss scaling")
        self.hyperparameters = self._hyperparameters(model, data, init_std)
        self.program = HFProgram(self.hyperparameters, getattr(data, "folder", None))
        self.commitment = commit_samples(data)
        self.nonce = config.nonce if config.nonce is not None else new_nonce()
        self.seed = derive_run_seed(self.commitment.root, self.nonce)
        size, steps = self.program.batch_size, args.max_steps
        self.sampler = CommittedSampler([list(ids) for _, ids in batches(self.seed, len(self.commitment), size, steps)])
        self.recording = RunRecording(self.monitor_options)
        self._loss = torch.tensor(0.0)
        self.add_callback(ComputewatchCallback(self))

    def _hyperparameters(self, model: transformers.PreTrainedModel, data: Any, init_std: float) -> dict[str, Any]:
        args = self.args
        decay = set(self.get_decay_parameter_names(model))
        steps = args.max_steps
        return {
            "v": 1,
            "program": PROGRAM,
            "framework": {"transformers": transformers.__version__},
            "model": {
                "class": type(model).__name__,
                "config": json.loads(model.config.to_json_string(use_diff=False)),
                "attn_implementation": model.config._attn_implementation,
            },
            "init": init_spec(init_std),
            "data": {"encoding": ENCODING, "source": data.spec, "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps},
            "trainer": {
                "steps": steps,
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "max_grad_norm": float(args.max_grad_norm or 0.0),
                "num_items_in_batch": bool(self.model_accepts_loss_kwargs),
                "shift_labels": bool(getattr(self, "_loss_shifts_labels", False)),
            },
            "optimizer": {
                "name": "AdamW",
                "lr": args.learning_rate,
                "betas": [args.adam_beta1, args.adam_beta2],
                "eps": args.adam_epsilon,
                "weight_decay": args.weight_decay,
                "fused": _optim(args) == "adamw_torch_fused",
                "no_decay": [n for n, _ in model.named_parameters() if n not in decay],
            },
            "schedule": {
                "name": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
                "num_warmup_steps": args.get_warmup_steps(steps),
                "num_training_steps": steps,
                "kwargs": _as_dict(args.lr_scheduler_kwargs),
            },
        }

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[int]:
        return self.sampler

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._loss += loss  # the step's loss: the sum of its micro-batches' scaled losses
        return loss

    def take_loss(self) -> torch.Tensor:
        loss, self._loss = self._loss, torch.tensor(0.0)
        return loss

    def train(self, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        if resume_from_checkpoint:
            raise IntegrationError("resuming from a Trainer checkpoint is not supported: the Recorder keeps this run's checkpoints")
        try:
            out = super().train(None, *args, **kwargs)
        except BaseException as exc:
            self.recording.finish(exc)
            raise
        self.recording.finish(None)
        return out

    def verify_command(self) -> str:
        """The `computewatch verify` command that checks this run."""
        assert isinstance(self.train_dataset, CommittedSamples)  # __init__ sets it and refuses another
        return self.monitor_options.verify_command(self.recording.run_id, self.train_dataset.source)


class ComputewatchCallback(TrainerCallback):
    """The hooks of `MonitoredTrainer` (added by it; not for a plain Trainer)."""

    def __init__(self, trainer: MonitoredTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, model: Any = None, optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        t = self.trainer
        seed_process(t.seed, 0, t.monitor_options.threads)
        init_weights(model, init_generator(t.seed), t.program.std)
        check_w0(lambda: t.program.build_model(init_generator(t.seed)), model, _W0_FIX)
        expected = t.program.build_optimizer(model)
        check_same_optimizer(optimizer, lr_scheduler, expected, t.program.build_scheduler(expected))
        t.recording.start(
            model=model,
            optimizer=optimizer,
            scheduler=lr_scheduler,
            hyperparameters=t.hyperparameters,
            commitment=t.commitment,
            nonce=t.nonce,
            entry=ENTRY,
            parts=[("", _PROGRAM_DIR, _program_files())],
        )

    def on_step_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.recording.pin_rng()

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        t = self.trainer
        step = state.global_step - 1
        committed = t.sampler.order[step]
        drawn = t.sampler.take(len(committed))
        if drawn != committed:
            raise IntegrationError(f"step {step}: the Trainer drew samples {drawn[:8]}..., the committed order has {committed[:8]}...")
        t.recording.record(step, committed, t.take_loss())


def _program_files() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in _PROGRAM_DIR.glob("*.py")))
