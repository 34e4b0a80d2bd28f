"""The training program of a Hugging Face Trainer run: ``hf_program:make_program``.

One `train_step` is one optimizer step of ``transformers.Trainer`` (single process, fp32) for
the settings the hyperparameters record, in the Trainer's order: for each micro-batch of
``per_device_train_batch_size`` samples, forward with ``num_items_in_batch`` (the label count of
the whole step, when the Trainer passes it) or the per-micro-batch mean divided by the number
of micro-batches, backward; then ``clip_grad_norm_`` at ``max_grad_norm`` (if > 0), the
optimizer step, the scheduler step, ``model.zero_grad()``. The optimizer is torch's AdamW with
the Trainer's two groups (weight decay for every parameter not in ``no_decay``); the scheduler
is ``transformers.get_scheduler`` with the recorded name and steps. The model is the recorded
transformers class built from its recorded config, W0 from `init.init_weights`.

Hyperparameters (``program: computewatch/hf-trainer``, ``v: 1``)::

    {"v", "program", "framework": {"transformers": version},
     "model": {"class", "config", "attn_implementation"}, "init": {"scheme", "std"},
     "data": {"encoding", "source", "batch_size"},
     "trainer": {"steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                 "max_grad_norm", "num_items_in_batch": bool, "shift_labels": bool},
     "optimizer": {"name": "AdamW", "lr", "betas", "eps", "weight_decay", "fused": bool,
                   "no_decay": [name]},
     "schedule": {"name", "num_warmup_steps", "num_training_steps", "kwargs"}}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import ENCODING, data_source, micro_batches
from .init import check_init_spec, init_weights

__all__ = ["PROGRAM", "HFProgram", "make_program"]

PROGRAM = "computewatch/hf-trainer"


class HFProgram:
    """The Trainer's optimizer step as a training program (docs/formats.md, "Training program")."""

    def __init__(self, hyperparameters: dict[str, Any], data_dir: Path | None = None) -> None:
        import transformers

        hp = hyperparameters
        if not isinstance(hp, dict) or hp.get("program") != PROGRAM or hp.get("v") != 1:
            raise ValueError(f"not the hyperparameters of a {PROGRAM} v1 run")
        recorded = hp["framework"]["transformers"]
        if recorded != transformers.__version__:
            # Another release may compute the loss or the schedule differently: no exact replay.
            raise ValueError(f"the run used transformers {recorded}, this machine has {transformers.__version__}")
        if hp["data"]["encoding"] != ENCODING:
            raise ValueError(f"unsupported sample encoding {hp['data']['encoding']!r}")
        self.hp = hp
        self.trainer = hp["trainer"]
        self.batch_size: int = hp["data"]["batch_size"]
        self.micro_batch_size: int = self.trainer["per_device_train_batch_size"]
        self.std = check_init_spec(hp["init"])
        self.data = data_source(hp["data"]["source"], data_dir)
        model_class = getattr(transformers, hp["model"]["class"], None)
        if not isinstance(model_class, type) or not issubclass(model_class, transformers.PreTrainedModel):
            raise ValueError(f"transformers has no model class {hp['model']['class']!r}")
        self._model_class = model_class

    def __len__(self) -> int:
        return len(self.data)

    def build_model(self, generator: torch.Generator) -> nn.Module:
        config_class = self._model_class.config_class
        if config_class is None:
            raise ValueError(f"{self._model_class.__name__} names no config class")
        config = config_class.from_dict(dict(self.hp["model"]["config"]))
        config._attn_implementation = self.hp["model"]["attn_implementation"]
        with torch.random.fork_rng(devices=[]):  # the class's own init draws from the global RNG; W0 does not
            model = self._model_class(config)
        init_weights(model, generator, self.std)
        return model.train()

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        opt = self.hp["optimizer"]
        if opt["name"] != "AdamW":
            raise ValueError(f"unsupported optimizer {opt['name']!r}")
        no_decay = set(opt["no_decay"])
        params = list(_unwrap(model).named_parameters())
        groups = [
            {"params": [p for n, p in params if n not in no_decay], "weight_decay": opt["weight_decay"]},
            {"params": [p for n, p in params if n in no_decay], "weight_decay": 0.0},
        ]
        fused = True if opt["fused"] else None  # the Trainer passes fused=True only for adamw_torch_fused
        return torch.optim.AdamW(groups, lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"], fused=fused)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        from transformers import get_scheduler

        s = self.hp["schedule"]
        return get_scheduler(
            s["name"],
            optimizer=optimizer,
            num_warmup_steps=s["num_warmup_steps"],
            num_training_steps=s["num_training_steps"],
            scheduler_specific_kwargs=dict(s["kwargs"]),
        )

    def sample(self, index: int) -> bytes:
        return self.data.sample(index)

    def collate(self, samples: Sequence[bytes]) -> list[dict[str, torch.Tensor]]:
        return micro_batches(samples, self.micro_batch_size)

    def _num_items(self, micro: list[dict[str, torch.Tensor]]) -> Any:
        if not self.trainer["num_items_in_batch"] or "labels" not in micro[0]:
            return None
        labels = [mb["labels"][..., 1:] if self.trainer["shift_labels"] else mb["labels"] for mb in micro]
        return sum(lab.ne(-100).sum() for lab in labels)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batch: list[dict[str, torch.Tensor]]) -> float:
        num_items = self._num_items(batch)
        model.zero_grad()
        model.train()
        total = torch.tensor(0.0)
        for mb in batch:
            inputs = mb if num_items is None else {**mb, "num_items_in_batch": num_items}
            out = model(**inputs)
            loss = out["loss"] if isinstance(out, dict) else out[0]
            if num_items is None:
                loss = loss / len(batch)
            loss.backward()
            total += loss.detach()
        if self.trainer["max_grad_norm"] > 0:
            nn.utils.clip_grad_norm_(list(model.parameters()), self.trainer["max_grad_norm"], norm_type=2)
        optimizer.step()
        scheduler.step()
        model.zero_grad()
        return total.item()

    def loss(self, model: nn.Module, batch: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        losses = [model(**mb)["loss"] for mb in batch]
        return torch.stack(losses).mean()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def make_program(hyperparameters: dict[str, Any], data_dir: Path | None = None) -> HFProgram:
    return HFProgram(hyperparameters, data_dir)
