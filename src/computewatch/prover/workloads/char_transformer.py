"""A small decoder-only transformer over bytes, the whole model on one screen.

Attention is written with explicit matmul/softmax ops rather than a fused kernel: the FLOP
counter counts fused CPU attention kernels as zero (spec/ANCHORS.md), and explicit ops are
deterministic on the CPU for a fixed thread count. No weight tying, so every parameter is its
own memory region (one tensor, one region in a chip's shard). Parameters are created empty and
filled only by `init_weights(generator)`, so W0 is a function of the run seed alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["CharTransformer"]


class _Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn_qkv = nn.Linear(n_embd, 3 * n_embd)
        self.attn_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.attn_qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.n_head)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        weights = self.drop(scores.masked_fill(future, float("-inf")).softmax(dim=-1))
        y = (weights @ v).transpose(1, 2).reshape(B, T, C)
        return self.drop(self.attn_proj(y))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.ln_1(x))
        return x + self.drop(self.mlp_proj(F.gelu(self.mlp_fc(self.ln_2(x)))))


class CharTransformer(nn.Module):
    """GPT-style byte model: token + position embeddings, pre-norm blocks, a linear head."""

    def __init__(
        self,
        vocab_size: int = 256,
        block_size: int = 64,
        n_layer: int = 2,
        n_head: int = 4,
        n_embd: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
        self.block_size = block_size
        self.n_layer = n_layer
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def init_weights(self, generator: torch.Generator) -> None:
        """GPT-2 init from ``generator`` only, in named_parameters order (part of the format)."""
        residual_std = 0.02 / math.sqrt(2 * self.n_layer)  # the residual stream grows with depth
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln_" in name or name.startswith("ln_"):
                    p.fill_(1.0)
                else:
                    std = residual_std if name.endswith("_proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std, generator=generator)

    def forward(self, idx: Tensor) -> Tensor:
        _B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # logits (B, T, vocab)
