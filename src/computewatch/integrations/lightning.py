"""Monitoring a Lightning run (``pip install computewatch[lightning]``), one process or DDP.

    from computewatch.integrations.lightning import ComputewatchCallback
    from computewatch.integrations.datasets import SyntheticTokens

    cw = ComputewatchCallback(data=SyntheticTokens(0, 1024, 32, 64), out="runs/lit", micro_batch_size=8,
                              config=RunConfig(checkpoint=CheckpointConfig(every=50)))
    trainer = L.Trainer(max_steps=200, accelerator="cpu", devices=1, callbacks=[cw],
                        enable_checkpointing=False, logger=False, deterministic=True,
                        use_distributed_sampler=False)
    trainer.fit(model, train_dataloaders=cw.dataloader())

`cw.dataloader()` feeds the committed samples (bytes, collated by the program's
`collate_micro` into ``{"input_ids", "labels"}`` int64 tensors) in the committed order: global
batches of ``micro_batch_size x accumulate_grad_batches x world_size`` samples
(`computewatch.formats.seed.batches`), rank r taking its contiguous part. The callback, in every
rank (one chip each):

- ``setup``: checks the settings, shares rank 0's nonce, fixes the replay environment, and
  overwrites every parameter with W0 from the committed seed (`program.init.init_weights`);
- ``on_train_start``: checks the optimizer and scheduler against what the program rebuilds from
  ``configure_optimizers()``, and starts the Recorder (manifest, chip precommitment, W0);
- ``on_train_batch_start``: pins the global RNG at the first micro-batch of a step;
- ``on_train_batch_end``: after each optimizer step, checks the ids the loader drew and records
  the step's committed ids, loss and learning rate.

The run replays through ``lightning_program:make_program`` of
`computewatch.integrations.program`, with the LightningModule's own file (and the modules it
imported from its folder) under ``user/``; the module is rebuilt as ``cls(**hparams)``, so it
must call ``self.save_hyperparameters()`` with JSON-able arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from computewatch.formats.program import rank_order_mean
from computewatch.formats.seed import (
    batches,
    derive_run_seed,
    init_generator,
    new_nonce,
)
from computewatch.integrations.datasets import CommittedSampler, CommittedSamples
from computewatch.integrations.program.data import ENCODING, collate_micro
from computewatch.integrations.program.init import init_spec, init_weights
from computewatch.integrations.program.lightning_program import (
    PROGRAM,
    LightningProgram,
    split_optimizers,
)
from computewatch.integrations.session import (
    IntegrationError,
    MonitorOptions,
    RunRecording,
    check_same_optimizer,
    check_w0,
    commit_samples,
    program_of,
    seed_process,
    shared,
)
from computewatch.prover.distributed import split_batch
from computewatch.prover.config import LEGACY_FIELDS, RunConfig, resolve_config

__all__ = ["ENTRY", "ComputewatchCallback"]

ENTRY = "lightning_program:make_program"
_PINNED_MODULES = "computewatch.integrations.program.lightning_modules"  # the template's model library
_PROGRAM_DIR = Path(__file__).resolve().parent / "program"
# The flat keyword options the callback took before `RunConfig` (deprecated).
_LEGACY_OPTIONS = ("chips", "checkpoint_every", "threads", "nonce", "snapshots_per_day", "chip_seconds_per_step", "chip_secret_seed")
assert set(_LEGACY_OPTIONS) <= set(LEGACY_FIELDS)
# Hooks that run inside the optimizer step: overriding them changes what a step computes.
_STEP_HOOKS = (
    "optimizer_step",
    "optimizer_zero_grad",
    "backward",
    "configure_gradient_clipping",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
)


_W0_FIX = (
    "the callback overwrites every parameter with W0 from the committed seed, and the Verifier rebuilds the "
    "module as ModuleClass(**hparams): keep every buffer a function of the hparams alone (set nothing "
    "random or loaded in __init__ or after it)"
)

class ComputewatchCallback(L.Callback):
    """Records a Lightning run under monitoring (see the module doc); `config` (`RunConfig`) says
    how, its ``distributed`` section (when set) agreeing with the Trainer's processes."""

    def __init__(
        self,
        *,
        data: Any,
        out: str | os.PathLike[str],
        micro_batch_size: int,
        init_std: float = 0.02,
        config: RunConfig | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(micro_batch_size, int) or micro_batch_size < 1:
            raise IntegrationError(f"micro_batch_size must be a positive integer, got {micro_batch_size!r}")
        self.data = data
        self.micro_batch_size = micro_batch_size
        self.init_std = init_std
        self.config = resolve_config("ComputewatchCallback", config, options, _LEGACY_OPTIONS)
        self.options = MonitorOptions(Path(out), self.config)
        self.recording = RunRecording(self.options)
        self.sampler = CommittedSampler()
        self._nonce = self.config.nonce
        self._micro = 0
        self._loss = torch.tensor(0.0)

    def dataloader(self) -> torch.utils.data.DataLoader:
        """The training data loader: committed samples, committed order, the program's collate."""
        return torch.utils.data.DataLoader(
            CommittedSamples(self.data), batch_size=self.micro_batch_size, sampler=self.sampler, collate_fn=collate_micro, num_workers=0
        )

    def verify_command(self) -> str:
        """The `computewatch verify` command that checks this run."""
        return self.options.verify_command(self.recording.run_id, self.data)

    # ---- hooks ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        _check(trainer, pl_module)
        self.rank, self.world = self.config.distributed.place(trainer.global_rank, trainer.world_size, "the Lightning Trainer")
        self.accumulate = trainer.accumulate_grad_batches
        self.steps = trainer.max_steps
        self.commitment = commit_samples(self.data)
        self.nonce = shared(self._nonce if self._nonce is not None else (new_nonce() if self.rank == 0 else None))
        self.seed = derive_run_seed(self.commitment.root, self.nonce)
        size = self.micro_batch_size * self.accumulate * self.world
        self.order = [list(ids) for _, ids in batches(self.seed, len(self.commitment), size, self.steps)]
        self.sampler.order = [split_batch(ids, self.rank, self.world) for ids in self.order]
        if type(pl_module).__module__ == _PINNED_MODULES:
            # A module of the pinned library: the run is the computewatch/lightning template,
            # its program the Verifier's own files and no code of the lab's.
            self._user: tuple[Path, tuple[str, ...]] | None = None
            declared = _PINNED_MODULES.rsplit(".", 1)[1]
        else:
            root, module, files = program_of(type(pl_module))
            self._user = (root, files)
            declared = f"user.{module}"
        self.hyperparameters = self._hyperparameters(trainer, pl_module, declared, size)
        self.program = LightningProgram(self.hyperparameters, getattr(self.data, "folder", None), module_class=type(pl_module))
        seed_process(self.seed, self.rank, self.options.threads)
        init_weights(pl_module, init_generator(self.seed), self.init_std)
        check_w0(lambda: self.program.build_model(init_generator(self.seed)), pl_module, _W0_FIX)

    def _hyperparameters(self, trainer: L.Trainer, pl_module: L.LightningModule, module: str, size: int) -> dict[str, Any]:
        algorithm = trainer.gradient_clip_algorithm
        return {
            "v": 1,
            "program": PROGRAM,
            "framework": {"lightning": L.__version__},
            "module": {"module": module, "class": type(pl_module).__qualname__, "hparams": dict(pl_module.hparams)},
            "init": init_spec(self.init_std),
            "data": {"encoding": ENCODING, "source": self.data.spec, "batch_size": size},
            "trainer": {
                "steps": self.steps,
                "world_size": self.world,
                "micro_batch_size": self.micro_batch_size,
                "accumulate_grad_batches": self.accumulate,
                "gradient_clip_val": None if trainer.gradient_clip_val is None else float(trainer.gradient_clip_val),
                "gradient_clip_algorithm": "norm" if algorithm is None else str(getattr(algorithm, "value", algorithm)),
            },
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The contract's DDP reduction (docs/formats.md), registered before the first backward,
        # so that the replay's DDP adds gradients in the same order.
        wrapped = trainer.strategy.model
        if self.world > 1 and isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
            wrapped.register_comm_hook(None, rank_order_mean)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        configs = trainer.lr_scheduler_configs
        scheduler = configs[0].scheduler if configs else None
        expected = self.program.build_optimizer(pl_module)
        check_same_optimizer(optimizer, scheduler, expected, self.program.build_scheduler(expected))
        self.recording.start(
            model=pl_module,
            optimizer=optimizer,
            scheduler=scheduler,
            hyperparameters=self.hyperparameters,
            commitment=self.commitment,
            nonce=self.nonce,
            entry=ENTRY,
            parts=[("", _PROGRAM_DIR, _program_files()), *([("user", *self._user)] if self._user is not None else [])],
            rank=self.rank,
            world_size=self.world,
        )
        self._next = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._micro % self.accumulate == 0:
            self.recording.pin_rng()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._micro += 1
        if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
            self._loss += outputs["loss"]
        if trainer.global_step <= self._next:
            return  # still accumulating
        step = self._next
        mine = self.sampler.order[step]
        drawn = self.sampler.take(len(mine))
        if drawn != mine:
            raise IntegrationError(f"step {step} rank {self.rank}: the loader drew samples {drawn[:8]}..., the committed order has {mine[:8]}...")
        loss, self._loss = self._loss, torch.tensor(0.0)
        self.recording.record(step, self.order[step], loss)
        self._next = step + 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.recording.finish(None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.recording.finish(exception)


def _check(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    problems = []
    if trainer.max_steps is None or trainer.max_steps <= 0:
        problems.append("max_steps is not set (the data order and schedule are committed for a known number of steps)")
    if str(trainer.precision) != "32-true":
        problems.append(f"precision={trainer.precision!r} (exact replay is '32-true')")
    if not pl_module.automatic_optimization:
        problems.append("manual optimization (the program replays Lightning's automatic optimization)")
    if trainer.strategy.root_device.type != "cpu":
        problems.append(f"device {trainer.strategy.root_device} (exact replay is on the CPU)")
    if trainer.world_size > 1:
        from lightning.pytorch.strategies import DDPStrategy

        if not isinstance(trainer.strategy, DDPStrategy):
            problems.append(f"strategy {type(trainer.strategy).__name__} (DDP or a single device)")
        if getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
            problems.append("use_distributed_sampler=True (the callback's loader splits the committed batches itself)")
    overridden = [h for h in _STEP_HOOKS if getattr(type(pl_module), h) is not getattr(L.LightningModule, h)]
    if overridden:
        problems.append(f"the module overrides {', '.join(overridden)} (the program replays Lightning's own step)")
    try:
        split_optimizers(pl_module.configure_optimizers())
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise IntegrationError("ComputewatchCallback cannot record this run replayably: " + "; ".join(problems))


def _program_files() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in _PROGRAM_DIR.glob("*.py")))
