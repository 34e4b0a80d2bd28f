"""A two-layer GPT-2 trained by the Hugging Face Trainer under monitoring:
``python examples/hf_trainer.py --out DIR --steps N``.

The model is built from a local `GPT2Config` (nothing comes from a hub) and the data are
synthetic token blocks. `MonitoredTrainer` is the Trainer with the committed data order, W0
from the committed seed and a callback that records every optimizer step (gradient accumulation
included); chips are provisioned under ``DIR/chips``, the transcript lands in ``DIR`` with the
Prover key at ``DIR/keys/prover.pub``, and the command that verifies the run is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel

from computewatch import CheckpointConfig, RunConfig
from computewatch.integrations.datasets import SyntheticTokens
from computewatch.integrations.hf import MonitoredTrainer, monitored_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder (transcript, chips/, keys/)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.1)
    args = parser.parse_args(argv)

    config = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
        resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout,
    )  # fmt: skip
    training = monitored_args(
        Path(args.out) / "trainer",  # the Trainer's own output folder (it saves nothing there)
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        weight_decay=0.1,
        warmup_steps=5,
        max_grad_norm=1.0,
        max_steps=args.steps,
    )
    trainer = MonitoredTrainer(
        model=GPT2LMHeadModel(config),
        args=training,
        data=SyntheticTokens(seed=0, size=512, block_size=32, vocab_size=64),
        out=args.out,
        config=RunConfig(threads=args.threads, checkpoint=CheckpointConfig(every=args.checkpoint_every)),
    )
    trainer.train()
    print(trainer.verify_command())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
