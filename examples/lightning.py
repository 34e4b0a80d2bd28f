"""A small GPT trained with Lightning under monitoring: ``python examples/lightning.py --out DIR``.

Chips are provisioned under ``DIR/chips`` (one per process, like `computewatch train`), the
transcript lands in ``DIR`` with the Prover key at ``DIR/keys/prover.pub``, and the command that
verifies the run is printed at the end. ``--devices 2`` trains with DDP over two gloo processes
(Lightning starts the second one by running this script again). Nothing is downloaded: the
model is defined here and the data are synthetic token blocks.
"""

from __future__ import annotations

import argparse
import os
import sys

# This file is named like the `lightning` package: keep its own folder off the import path so
# that `import lightning` finds the package when the file runs as a script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = nn.MultiheadAttention(n_embd, n_head, batch_first=True)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TinyGPT(L.LightningModule):
    """A two-layer GPT over token blocks ``{"input_ids", "labels"}``: predict token i+1 from tokens <= i."""

    def __init__(self, vocab_size: int = 64, block_size: int = 32, n_layer: int = 2, n_head: int = 2, n_embd: int = 32, lr: float = 3e-3, warmup: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()  # the Verifier rebuilds the module as TinyGPT(**hparams)
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
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

    def configure_optimizers(self) -> dict:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.1)
        warmup = self.hparams.warmup
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder (transcript, chips/, keys/)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--devices", type=int, default=1, help="1, or N for DDP over N gloo processes")
    parser.add_argument("--strategy", default="ddp", help="with --devices > 1: ddp (this script runs again per rank) or ddp_spawn")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from computewatch import CheckpointConfig, RunConfig
    from computewatch.integrations.datasets import SyntheticTokens
    from computewatch.integrations.lightning import ComputewatchCallback

    data = SyntheticTokens(seed=0, size=512, block_size=32, vocab_size=64)
    config = RunConfig(threads=args.threads, checkpoint=CheckpointConfig(every=args.checkpoint_every))
    cw = ComputewatchCallback(data=data, out=args.out, micro_batch_size=4, config=config)
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy if args.devices > 1 else "auto",
        accumulate_grad_batches=2,
        gradient_clip_val=1.0,
        callbacks=[cw],
        enable_checkpointing=False,
        logger=False,
        deterministic=True,
        use_distributed_sampler=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyGPT(), train_dataloaders=cw.dataloader())
    if trainer.global_rank == 0:
        print(cw.verify_command())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
