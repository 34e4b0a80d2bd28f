"""LightningModules the Verifier pins: the ``computewatch/lightning`` template's model library.

A run that trains one of these classes, unchanged, through `ComputewatchCallback` is a trusted
template run (formats/templates.py): its program is this folder, the Verifier's own copy, and
the declaration is the hyperparameters record (``module: {"module": "lightning_modules",
"class", "hparams"}`` plus the Trainer settings). The model, its loss and its optimizer come from
here; the data loader over the committed samples (`data.micro_batches`) and W0 from the
committed seed (`init.init_weights`) from the program. Nothing of the Prover's code runs.

Like every file of the program, it imports only torch and the framework, nothing of computewatch.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CausalLM"]


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a 4x MLP."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.out = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))


class CausalLM(L.LightningModule):
    """A GPT-style causal language model over token blocks ``{"input_ids", "labels"}``: predicts
    token i+1 from tokens <= i; cross-entropy is the loss; AdamW with linear warm-up then cosine
    decay to ``min_lr_ratio``, stepped every optimizer step."""

    def __init__(self, vocab_size: int = 256, block_size: int = 64, n_layer: int = 2, n_head: int = 2, n_embd: int = 32,
                 lr: float = 3e-3, weight_decay: float = 0.1, warmup_steps: int = 10, total_steps: int = 1000,
                 min_lr_ratio: float = 0.1) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
        self.save_hyperparameters()  # the declaration: the Verifier rebuilds CausalLM(**hparams)
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(_Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, labels = batch["input_ids"], batch["labels"]
        logits = self(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))

    def configure_optimizers(self) -> Any:
        hp: Any = self.hparams  # the constructor's arguments, as saved
        decay = [p for p in self.parameters() if p.ndim >= 2]
        rest = [p for p in self.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=hp.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(hp.warmup_steps, hp.total_steps, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _warmup_cosine(warmup: int, total: int, floor: float) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))

    return factor
