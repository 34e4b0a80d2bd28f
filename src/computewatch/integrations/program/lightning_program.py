"""The training program of a Lightning run: ``lightning_program:make_program``.

The LightningModule is the lab's own class: its files travel in this program's ``user/``
folder and ``module.module`` names it relative to the program (``user.train``), built as
``cls(**module.hparams)`` with W0 from `init.init_weights`. The optimizer and scheduler come from
its ``configure_optimizers()`` (one optimizer; at most one scheduler, stepped every optimizer
step). One `train_step` is one optimizer step of Lightning's automatic optimization, fp32: for
each micro-batch, ``training_step(micro_batch, i)`` (through the DDP wrapper, without gradient
sync until the last micro-batch, as Lightning does), its loss divided by
``accumulate_grad_batches``, backward; the gradients zeroed before the first backward; clipping
by norm or value at ``gradient_clip_val`` (if set and > 0); the optimizer step; the scheduler
step. ``training_step`` must not let its numerics depend on ``batch_idx`` or on ``self.trainer``.

Hyperparameters (``program: computewatch/lightning``, ``v: 1``)::

    {"v", "program", "framework": {"lightning": version},
     "module": {"module", "class", "hparams"}, "init": {"scheme", "std"},
     "data": {"encoding", "source", "batch_size"},
     "trainer": {"steps", "world_size", "micro_batch_size", "accumulate_grad_batches",
                 "gradient_clip_val", "gradient_clip_algorithm"}}
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from .data import ENCODING, data_source, micro_batches
from .init import check_init_spec, init_weights

if TYPE_CHECKING:
    from lightning import LightningModule

__all__ = ["PROGRAM", "LightningProgram", "make_program", "split_optimizers"]

PROGRAM = "computewatch/lightning"


def split_optimizers(config: Any) -> tuple[torch.optim.Optimizer, Any]:
    """(optimizer, scheduler or None) from what ``configure_optimizers`` returned; one optimizer only."""
    scheduler = None
    if isinstance(config, torch.optim.Optimizer):
        return config, None
    if isinstance(config, Mapping):
        optimizer, scheduler = config.get("optimizer"), config.get("lr_scheduler")
    elif isinstance(config, (list, tuple)) and len(config) == 2 and isinstance(config[0], (list, tuple)):
        if len(config[0]) != 1 or len(config[1]) > 1:
            raise ValueError("configure_optimizers must return one optimizer and at most one scheduler")
        optimizer, scheduler = config[0][0], (config[1][0] if config[1] else None)
    elif isinstance(config, (list, tuple)) and len(config) == 1:
        optimizer = config[0]
    else:
        raise ValueError(f"configure_optimizers returned {type(config).__name__}; use an optimizer or {{'optimizer', 'lr_scheduler'}}")
    if isinstance(scheduler, Mapping):
        if scheduler.get("interval", "epoch") != "step" or scheduler.get("frequency", 1) != 1:
            raise ValueError("the learning-rate scheduler must step every optimizer step: {'interval': 'step', 'frequency': 1}")
        scheduler = scheduler.get("scheduler")
    elif scheduler is not None:
        raise ValueError("give the scheduler as {'scheduler': s, 'interval': 'step'}: Lightning steps a bare scheduler once per epoch")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError("configure_optimizers must return a torch optimizer")
    return optimizer, scheduler


class LightningProgram:
    """Lightning's automatic-optimization step as a training program."""

    def __init__(self, hyperparameters: dict[str, Any], data_dir: Path | None = None, module_class: type | None = None) -> None:
        import lightning

        hp = hyperparameters
        if not isinstance(hp, dict) or hp.get("program") != PROGRAM or hp.get("v") != 1:
            raise ValueError(f"not the hyperparameters of a {PROGRAM} v1 run")
        if hp["framework"]["lightning"] != lightning.__version__:
            raise ValueError(f"the run used lightning {hp['framework']['lightning']}, this machine has {lightning.__version__}")
        if hp["data"]["encoding"] != ENCODING:
            raise ValueError(f"unsupported sample encoding {hp['data']['encoding']!r}")
        self.hp = hp
        self.trainer = hp["trainer"]
        self.batch_size: int = hp["data"]["batch_size"]
        self.std = check_init_spec(hp["init"])
        self.data = data_source(hp["data"]["source"], data_dir)
        if module_class is None:
            module = importlib.import_module(f"{__package__}.{hp['module']['module']}")
            module_class = getattr(module, hp["module"]["class"], None)
        if not isinstance(module_class, type) or not issubclass(module_class, lightning.LightningModule):
            raise ValueError(f"{hp['module']['module']} has no LightningModule {hp['module']['class']!r}")
        self.module_class = module_class
        self._schedulers: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.data)

    def build_model(self, generator: torch.Generator) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # the constructor's own init draws from the global RNG; W0 does not
            model = self.module_class(**self.hp["module"]["hparams"])
        init_weights(model, generator, self.std)
        return model.train()

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        optimizer, scheduler = split_optimizers(_unwrap(model).configure_optimizers())
        self._schedulers[id(optimizer)] = scheduler
        return optimizer

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        return self._schedulers.pop(id(optimizer), None)

    def sample(self, index: int) -> bytes:
        return self.data.sample(index)

    def collate(self, samples: Sequence[bytes]) -> list[dict[str, torch.Tensor]]:
        return micro_batches(samples, self.trainer["micro_batch_size"])

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batch: list[dict[str, torch.Tensor]]) -> float:
        module = _unwrap(model)
        module.train()
        accumulate = self.trainer["accumulate_grad_batches"]
        total = torch.tensor(0.0)
        for i, mb in enumerate(batch):
            last = i == len(batch) - 1
            sync = model.no_sync() if not last and isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()
            with sync:
                out = _training_step(model, module, mb, i)
                loss = (out["loss"] if isinstance(out, Mapping) else out) / accumulate
                if i == 0:
                    optimizer.zero_grad()
                loss.backward()
            total += loss.detach()
        clip = self.trainer["gradient_clip_val"]
        if clip is not None and clip > 0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if self.trainer["gradient_clip_algorithm"] == "value":
                nn.utils.clip_grad_value_(params, clip_value=clip)
            else:
                nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return total.item()

    def loss(self, model: nn.Module, batch: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        module = _unwrap(model)
        outs = [_training_step(model, module, mb, i) for i, mb in enumerate(batch)]
        return torch.stack([o["loss"] if isinstance(o, Mapping) else o for o in outs]).mean()


def _unwrap(model: nn.Module) -> LightningModule:
    return cast("LightningModule", model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model)


def _training_step(model: nn.Module, module: LightningModule, batch: Any, index: int) -> Any:
    """``module.training_step``, called through DDP's forward when wrapped (as Lightning does), so
    that DDP prepares its gradient reduction."""
    if model is module:
        return module.training_step(batch, index)
    saved = module.__dict__.get("forward")

    def restore() -> None:
        if saved is None:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = saved

    def redirect(*args: Any, **kwargs: Any) -> Any:
        restore()
        return module.training_step(*args, **kwargs)

    module.__dict__["forward"] = redirect
    try:
        return model(batch, index)
    finally:
        restore()


def make_program(hyperparameters: dict[str, Any], data_dir: Path | None = None) -> LightningProgram:
    return LightningProgram(hyperparameters, data_dir)
