"""Workload: everything needed to rebuild and run one demo training run, and the named presets.

A Workload is the run's metadata 𝕄 in executable form: `hyperparameters` is the JSON record
(canonical-JSON safe) and `from_hyperparameters` rebuilds the same Workload from it, so a
Verifier can replay a segment from the transcript alone. W0 comes only from the generator
handed to `build_model` (seeded by `computewatch.formats.seed.init_generator`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from computewatch.crypto.errors import FormatError
from .char_transformer import CharTransformer
from .mlp import TinyMLP
from .text import STDLIB_SOURCE, TextCorpus

__all__ = ["HYPERPARAMETERS_VERSION", "PRESETS", "Workload", "preset"]

HYPERPARAMETERS_VERSION = 1
# Model kinds by the name the hyperparameters record; each has init_weights(generator).
_MODELS: dict[str, type[TinyMLP] | type[CharTransformer]] = {"tiny_mlp": TinyMLP, "char_transformer": CharTransformer}


def _warmup_cosine(warmup_steps: int, total_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warmup to 1 over warmup_steps, cosine decay to min_lr_ratio at total_steps."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


@dataclass(frozen=True)
class Workload:
    """A model, its data, optimizer and schedule; `train_step` is the whole training step."""

    name: str
    model_kind: str
    model_config: dict[str, Any]
    block_size: int  # sample = block_size + 1 bytes
    batch_size: int
    corpus_bytes: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 10
    total_steps: int = 1000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A private copy: presets share their config dict with every Workload replaced from them.
        object.__setattr__(self, "model_config", dict(self.model_config))
        if self.model_kind not in _MODELS:
            raise FormatError(f"unknown model kind {self.model_kind!r}; known: {sorted(_MODELS)}")
        for name in ("block_size", "batch_size", "corpus_bytes", "warmup_steps", "total_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FormatError(f"workload {name} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and self.grad_clip > 0 and 0 <= self.min_lr_ratio <= 1):
            raise FormatError("workload needs lr > 0, grad_clip > 0 and 0 <= min_lr_ratio <= 1")

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "v": HYPERPARAMETERS_VERSION,
            "workload": self.name,
            "model": {"kind": self.model_kind, **self.model_config},
            "data": {
                "source": STDLIB_SOURCE,
                "max_bytes": self.corpus_bytes,
                "block_size": self.block_size,
                "batch_size": self.batch_size,
                "order": "computewatch/v1 data-order, incomplete last batch of each epoch dropped",
            },
            "optimizer": {
                "name": "AdamW",
                "lr": self.lr,
                "betas": list(self.betas),
                "eps": self.eps,
                "weight_decay": self.weight_decay,
                "decay_params": "ndim>=2",
                "foreach": True,
            },
            "schedule": {
                "name": "linear-warmup-cosine",
                "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps,
                "min_lr_ratio": self.min_lr_ratio,
            },
            "grad_clip": self.grad_clip,
            "loss": "cross-entropy",
            "dtype": "float32",
            "init": "seed substream 'init'",
        }

    @classmethod
    def from_hyperparameters(cls, hp: dict[str, Any]) -> Workload:
        """Rebuild the Workload a `hyperparameters` record describes."""
        try:
            if hp["v"] != HYPERPARAMETERS_VERSION or hp["data"]["source"] != STDLIB_SOURCE:
                raise FormatError(f"unsupported hyperparameters version or data source in {hp!r}")
            model = dict(hp["model"])
            opt, sched = hp["optimizer"], hp["schedule"]
            workload = cls(
                name=hp["workload"],
                model_kind=model.pop("kind"),
                model_config=model,
                block_size=hp["data"]["block_size"],
                batch_size=hp["data"]["batch_size"],
                corpus_bytes=hp["data"]["max_bytes"],
                lr=opt["lr"],
                betas=(opt["betas"][0], opt["betas"][1]),
                eps=opt["eps"],
                weight_decay=opt["weight_decay"],
                warmup_steps=sched["warmup_steps"],
                total_steps=sched["total_steps"],
                min_lr_ratio=sched["min_lr_ratio"],
                grad_clip=hp["grad_clip"],
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise FormatError(f"hyperparameters record is missing or mistypes a field: {exc!r}") from None
        if workload.hyperparameters != hp:
            raise FormatError("hyperparameters record has fields or values this version does not reproduce")
        return workload

    def dataset(self) -> TextCorpus:
        if "dataset" not in self._cache:
            self._cache["dataset"] = TextCorpus.from_stdlib(self.block_size, self.corpus_bytes)
        return self._cache["dataset"]

    def sample(self, index: int) -> bytes:
        """Sample `index` of the corpus (the training-program contract's data access)."""
        return self.dataset().sample(index)

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """The model with W0 drawn from ``generator`` alone (the global RNG is never touched)."""
        if not isinstance(generator, torch.Generator):
            raise FormatError(f"build_model needs a torch.Generator, got {type(generator).__name__}")
        with torch.device("meta"):  # allocate shapes only: no default init consuming any RNG
            model = _MODELS[self.model_kind](**self.model_config)
        model = model.to_empty(device="cpu")
        model.init_weights(generator)
        return model.train()

    def build_optimizer(self, model: nn.Module) -> torch.optim.AdamW:
        params = list(model.parameters())
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},  # biases, norms
        ]
        return torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps, foreach=True)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, _warmup_cosine(self.warmup_steps, self.total_steps, self.min_lr_ratio)
        )

    def collate(self, samples: list[bytes]) -> tuple[Tensor, Tensor]:
        """Byte windows -> (inputs, targets); next-byte targets for every position or the last."""
        size = self.block_size + 1
        if not samples or any(len(s) != size for s in samples):
            raise FormatError(f"collate needs a non-empty list of {size}-byte samples")
        tokens = torch.frombuffer(bytearray(b"".join(samples)), dtype=torch.uint8).view(len(samples), size).long()
        if self.model_kind == "tiny_mlp":
            return tokens[:, :-1], tokens[:, -1]
        return tokens[:, :-1], tokens[:, 1:]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch
        logits = model(inputs)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def train_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        batch: tuple[Tensor, Tensor],
    ) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, batch)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip, foreach=True)
        optimizer.step()
        scheduler.step()
        return loss.item()


def _char_transformer(name: str, *, block_size: int, n_layer: int, n_embd: int, **fields: Any) -> Workload:
    """A CharTransformer preset: 4 heads, no dropout, context = the sample's block size."""
    config = {
        "vocab_size": 256,
        "block_size": block_size,
        "n_layer": n_layer,
        "n_head": 4,
        "n_embd": n_embd,
        "dropout": 0.0,
    }
    return Workload(name=name, model_kind="char_transformer", model_config=config, block_size=block_size, **fields)


PRESETS: dict[str, Workload] = {
    "mlp": Workload(
        name="mlp",
        model_kind="tiny_mlp",
        model_config={"vocab_size": 256, "context": 8, "n_embd": 16, "hidden": 128},
        block_size=8,
        batch_size=64,
        corpus_bytes=1 << 18,
        lr=1e-2,
        weight_decay=0.0,
    ),
    "tiny": _char_transformer(
        "tiny", block_size=64, n_layer=2, n_embd=64, batch_size=32, corpus_bytes=1 << 20, lr=3e-3
    ),
    "small": _char_transformer(
        "small",
        block_size=128,
        n_layer=4,
        n_embd=128,
        batch_size=32,
        corpus_bytes=1 << 22,
        lr=1e-3,
        warmup_steps=50,
        total_steps=5000,
    ),
}


def preset(name: str, **overrides: Any) -> Workload:
    """A named preset ("mlp", "tiny", "small"), optionally with fields replaced (e.g. total_steps)."""
    if name not in PRESETS:
        raise FormatError(f"unknown workload preset {name!r}; choose one of {sorted(PRESETS)}")
    try:
        return dataclasses.replace(PRESETS[name], **overrides)
    except TypeError as exc:
        raise FormatError(f"bad override for preset {name!r}: {exc}") from None
