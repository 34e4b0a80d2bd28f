"""A nanoGPT-style loop under monitoring: ``python examples/plain_loop.py --out DIR --steps N``.

The training program (`Program`: model, data, optimizer, schedule, one step) is this file;
`computewatch.monitor` commits the data, draws the nonce, builds W0 from the committed seed,
binds this file by its code digest, provisions chips under ``DIR/chips`` and keeps the
transcript in ``DIR`` (Prover key at ``DIR/keys/prover.pub``). The loop at the bottom is the
only place monitoring shows; the command that verifies the run is printed at the end.
Nothing is downloaded: the data are synthetic token sequences made from their index.
"""

from __future__ import annotations

import argparse
import hashlib
import math

import torch
from torch import nn
from torch.nn import functional as F

import computewatch


# ---- model (nanoGPT, small) ---------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


# ---- the training program (what a Verifier replays) -----------------------------------------------------
class Program:
    """Called as ``Program(hyperparameters, data_dir)`` by computewatch.monitor and by the Verifier."""

    def __init__(self, hp: dict, data_dir: object = None) -> None:
        self.hp = hp
        self.batch_size = hp["batch_size"]

    def __len__(self) -> int:
        return self.hp["data"]["size"]

    def sample(self, i: int) -> bytes:
        """Token sequence i: an arithmetic progression mod the vocabulary, from BLAKE2b of i."""
        d = self.hp["data"]
        h = hashlib.blake2b(f"{d['seed']}/{i}".encode(), digest_size=16).digest()
        start, stride = h[0] % d["vocab"], 1 + h[1] % (d["vocab"] - 1)
        return bytes((start + stride * j) % d["vocab"] for j in range(self.hp["model"]["block_size"] + 1))

    def collate(self, samples: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.tensor([list(s) for s in samples], dtype=torch.long)
        return t[:, :-1], t[:, 1:]

    def build_model(self, generator: torch.Generator) -> nn.Module:
        model = GPT(**self.hp["model"])
        with torch.no_grad():  # W0 from the committed seed's generator alone, in named_parameters order
            for name, p in model.named_parameters():
                if p.ndim >= 2:
                    p.normal_(0.0, 0.02, generator=generator)
                else:
                    p.fill_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight" else 0.0)
        return model.train()

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.hp["lr"], betas=(0.9, 0.95), weight_decay=0.1)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        warmup, total = self.hp["warmup"], self.hp["steps"]

        def lr_lambda(step: int) -> float:  # nanoGPT's get_lr: linear warmup, cosine decay to 10%
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return model(*batch)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: object, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(*batch)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        return loss.item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder (transcript, chips/, keys/)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    hp = {
        "model": {"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
        "data": {"seed": 0, "size": 512, "vocab": 64},
        "batch_size": 8,
        "lr": 3e-3,
        "warmup": 5,
        "steps": args.steps,
    }

    config = computewatch.RunConfig(threads=args.threads, checkpoint=computewatch.CheckpointConfig(every=args.checkpoint_every))
    run = computewatch.monitor(Program, hp, out=args.out, config=config)
    with run:
        for _step, batch in run.batches(args.steps):
            loss = run.program.train_step(run.model, run.optimizer, run.scheduler, batch)
            run.step(loss)
    print(run.verify_command())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
