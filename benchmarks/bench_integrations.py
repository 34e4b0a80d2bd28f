"""Monitoring overhead of the HF Trainer and Lightning integrations: the same training with and
without monitoring, interleaved step by step in one process (issue 13; target <= 1%, goal 0.5%).

Method (that of benchmarks/_overhead.py, carried over to frameworks that own their loop).
For each framework two trainers run the same training (a 4-layer GPT, 256 wide, 128-token blocks,
batch 8, fp32, one CPU thread, deterministic kernels; the same W0 from the committed seed and the
same committed data order, so both compute the same trajectory: two different trajectories can
differ in speed by themselves, e.g. through denormal numbers in the optimizer state): a plain
one (the framework alone, no callback of ours) and a monitored one
(`MonitoredTrainer` / `ComputewatchCallback`, one chip whose signed firmware snapshots at the
paper's rate f = 0.1 per busy day with each step's measured wall time as busy time, a
checkpoint every 100 steps). Each trainer runs in its own thread; a baton lets exactly one of
them run at a time and hands over after every optimizer step, in pairs whose order flips every
pair (plain monitored | monitored plain | ...), so a burst of load from other processes, and
whatever favours the first or second run of a pair, hits both alike. A side's step time runs from taking the
baton to handing it back: the framework's loop, data, forward, backward, optimizer, every
callback (the recording included). The first steps of each are warm-up and not counted.

- ``overhead``: total monitored time (plus the final flush of queued checkpoint writes) over
  total plain time, minus one;
- ``overhead_median_pair``: median over step pairs of monitored/plain - 1 (robust to outliers,
  blind to rare costs such as a checkpoint);
- ``overhead_accounted``: (time inside `Recorder.step` + background writer time) / plain time,
  a bound that load from other processes cannot fake (it leaves out the callback's own bookkeeping).

    python benchmarks/bench_integrations.py [--steps 200] [--frameworks hf,lightning]

Prints JSON and writes it to benchmarks/results/bench_integrations.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _results import publish  # benchmarks/_results.py (this script's folder is on sys.path)
from typing import Any

import torch

from computewatch.prover.config import CheckpointConfig, ChipConfig, RunConfig

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 5
_SAMPLES = dict(seed=0, size=4096, block_size=128, vocab_size=512)
_MODEL = dict(vocab_size=512, block_size=128, n_layer=4, n_head=4, n_embd=256)


class Baton:
    """Exactly one side runs; the holder hands over after each optimizer step. Runs go in pairs
    whose order flips every pair (a b | b a | a b ...), so whatever favours the first or the
    second run of a pair (caches, wake-up latency) favours both sides alike."""

    def __init__(self, sides: tuple[str, str], steps: int) -> None:
        self.sides, self.steps = sides, steps
        self.runs = 0
        self.done: set[str] = set()
        self.turn = sides[0]
        self.cv = threading.Condition()
        self.started: dict[str, float] = {}
        self.times: dict[str, list[float]] = {s: [] for s in sides}

    def _side(self, run: int) -> str:
        pair, pos = divmod(run, 2)
        return self.sides[pos if pair % 2 == 0 else 1 - pos]

    def take(self, side: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.turn == side)
        self.started[side] = time.perf_counter()

    def hand_over(self, side: str) -> None:
        self.times[side].append(time.perf_counter() - self.started[side])
        with self.cv:
            self.runs += 1
            nxt = self._side(self.runs)
            if len(self.times[nxt]) >= self.steps or nxt in self.done:  # finished: the baton stays with the other
                nxt = self.sides[1] if nxt == self.sides[0] else self.sides[0]
            self.turn = nxt
            self.cv.notify_all()
        if len(self.times[side]) < self.steps:
            self.take(side)

    def release(self, side: str) -> None:
        """The side is done (or failed): the other runs on without waiting for it."""
        with self.cv:
            self.done.add(side)
            self.turn = self.sides[1] if side == self.sides[0] else self.sides[0]
            self.cv.notify_all()


def _timed_finish(recording: Any, into: dict[str, float]) -> None:
    """Measure the monitored side's tail (queued writes flushed, final checkpoint) and its accounting."""
    finish, start = recording.finish, recording.start

    def started(**kwargs: Any) -> Any:
        rec = start(**kwargs)
        rec.flush()  # the W0 checkpoint is setup, not steady-state cost (warm-up step)
        into["writer0_s"] = rec.writer_busy_s
        return rec

    def timed(exc: BaseException | None = None) -> None:
        t0 = time.perf_counter()
        rec = recording.recorder
        if rec is not None and exc is None:
            rec.flush()
            into["critical_s"] = rec.critical_s
            into["writer_s"] = rec.writer_busy_s - into.get("writer0_s", 0.0)
            into["snapshots"] = len(rec.snapshots)
        finish(exc)
        into["flush_s"] = time.perf_counter() - t0

    recording.start, recording.finish = started, timed


def _run_pair(baton: Baton, plain: Callable[[], None], monitored: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guard(side: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                baton.release(side)  # the other side must not wait for it forever

        return run

    threads = [threading.Thread(target=guard(side, f)) for side, f in (("plain", plain), ("monitored", monitored))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _summary(baton: Baton, acct: dict[str, float]) -> dict[str, Any]:
    plain, mon = baton.times["plain"][WARMUP:], baton.times["monitored"][WARMUP:]
    t_plain, t_mon = sum(plain), sum(mon) + acct.get("flush_s", 0.0)
    ratios = [m / p for p, m in zip(plain, mon, strict=True)]
    return {
        "steps_counted": len(plain),
        "step_s_plain": t_plain / len(plain),
        "overhead": t_mon / t_plain - 1.0,
        "overhead_median_pair": statistics.median(ratios) - 1.0,
        "overhead_accounted": (acct.get("critical_s", 0.0) + acct.get("writer_s", 0.0)) / t_plain,
        "final_flush_s": acct.get("flush_s"),
        "snapshots_in_window": acct.get("snapshots"),
    }


# ---- Hugging Face ----------------------------------------------------------------------------------
def bench_hf(steps: int, tmp: Path, options: RunConfig) -> dict[str, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback

    from computewatch.formats.seed import init_generator
    from computewatch.integrations.datasets import (
        CommittedSampler,
        CommittedSamples,
        SyntheticTokens,
        collate_micro,
    )
    from computewatch.integrations.hf import MonitoredTrainer, monitored_args
    from computewatch.integrations.program.init import init_weights

    baton = Baton(("plain", "monitored"), steps)

    class Turns(TrainerCallback):
        def __init__(self, side: str) -> None:
            self.side, self.first = side, True

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.first:
                self.first = False
                baton.take(self.side)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            baton.hand_over(self.side)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            baton.release(self.side)

    config = GPT2Config(vocab_size=_MODEL["vocab_size"], n_positions=_MODEL["block_size"], n_embd=_MODEL["n_embd"], n_layer=_MODEL["n_layer"],
                        n_head=_MODEL["n_head"], bos_token_id=0, eos_token_id=0)
    data = SyntheticTokens(**_SAMPLES)
    args = dict(per_device_train_batch_size=8, learning_rate=1e-3, max_steps=steps, max_grad_norm=1.0, weight_decay=0.1)
    monitored = MonitoredTrainer(model=GPT2LMHeadModel(config), args=monitored_args(tmp / "hf-mon", **args), data=data, out=tmp / "hf-run", config=options)

    class PlainTrainer(Trainer):  # the same order as the monitored run, nothing recorded
        def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[int]:
            return CommittedSampler(monitored.sampler.order)

    plain_model = GPT2LMHeadModel(config)
    init_weights(plain_model, init_generator(monitored.seed), 0.02)  # the monitored run's W0
    plain = PlainTrainer(model=plain_model, args=monitored_args(tmp / "hf-plain", **args), train_dataset=CommittedSamples(data),
                         data_collator=collate_micro, callbacks=[Turns("plain")])
    monitored.add_callback(Turns("monitored"))  # after the recording callback: its work is inside the timed step
    acct: dict[str, float] = {}
    _timed_finish(monitored.recording, acct)
    _run_pair(baton, plain.train, monitored.train)
    return _summary(baton, acct)


# ---- Lightning -------------------------------------------------------------------------------------
def bench_lightning(steps: int, tmp: Path, options: RunConfig) -> dict[str, Any]:
    import lightning as L

    from computewatch.formats.seed import batches, derive_run_seed, init_generator
    from computewatch.integrations.datasets import (
        CommittedSampler,
        CommittedSamples,
        SyntheticTokens,
        collate_micro,
    )
    from computewatch.integrations.lightning import ComputewatchCallback
    from computewatch.integrations.program.init import init_weights
    from computewatch.integrations.session import commit_samples

    spec = importlib.util.spec_from_file_location("lightning_example", ROOT / "examples" / "lightning.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules["lightning_example"] = example
    spec.loader.exec_module(example)
    baton = Baton(("plain", "monitored"), steps)

    class Turns(L.Callback):
        def __init__(self, side: str) -> None:
            self.side, self.first = side, True

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            if self.first:
                self.first = False
                baton.take(self.side)

        def on_train_batch_end(self, trainer: Any, module: Any, out: Any, batch: Any, idx: int) -> None:
            baton.hand_over(self.side)

        def on_train_end(self, trainer: Any, module: Any) -> None:
            baton.release(self.side)

    data = SyntheticTokens(**_SAMPLES)
    common = dict(max_steps=steps, accelerator="cpu", devices=1, enable_checkpointing=False, logger=False, deterministic=True,
                  use_distributed_sampler=False, enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)
    hparams = dict(_MODEL, lr=1e-3, warmup=10)
    nonce = b"computewatch-bench-integrations"
    seed = derive_run_seed(commit_samples(data).root, nonce)
    cw = ComputewatchCallback(data=data, out=tmp / "lit-run", micro_batch_size=8, config=options.replace(nonce=nonce))
    acct: dict[str, float] = {}
    _timed_finish(cw.recording, acct)
    order = [list(ids) for _, ids in batches(seed, len(data), 8, steps)]  # the monitored run's order and W0
    loader = torch.utils.data.DataLoader(CommittedSamples(data), batch_size=8, sampler=CommittedSampler(order), collate_fn=collate_micro)
    plain_module = example.TinyGPT(**hparams)
    init_weights(plain_module, init_generator(seed), 0.02)
    plain = L.Trainer(callbacks=[Turns("plain")], **common)
    monitored = L.Trainer(callbacks=[cw, Turns("monitored")], **common)
    _run_pair(baton, lambda: plain.fit(plain_module, train_dataloaders=loader),
              lambda: monitored.fit(example.TinyGPT(**hparams), train_dataloaders=cw.dataloader()))
    return _summary(baton, acct)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Monitoring overhead of the HF Trainer and Lightning integrations.")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per side (the first 5 are warm-up)")
    parser.add_argument("--frameworks", default="hf,lightning")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--snapshots-per-day", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.steps <= WARMUP:
        parser.error(f"--steps must exceed the {WARMUP} warm-up steps")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    options = RunConfig(
        threads=1,
        checkpoint=CheckpointConfig(every=args.checkpoint_every),
        chip=ChipConfig(snapshots_per_day=args.snapshots_per_day, seconds_per_step=None),
    )
    result: dict[str, Any] = {
        "method": "plain and monitored trainers alternate optimizer steps (baton between two threads), one CPU thread, fp32",
        "steps_per_side": args.steps,
        "warmup_steps": WARMUP,
        "checkpoint_every": args.checkpoint_every,
        "snapshots_per_day": args.snapshots_per_day,
        "model": _MODEL,
        "batch_size": 8,
        "torch": torch.__version__,
    }
    benches = {"hf": bench_hf, "lightning": bench_lightning}
    with tempfile.TemporaryDirectory(prefix="computewatch-bench-integrations-") as tmp:
        for name in args.frameworks.split(","):
            if name not in benches:
                parser.error(f"unknown framework {name!r}; choose from {sorted(benches)}")
            result[name] = benches[name](args.steps, Path(tmp) / name, options)
    publish("bench_integrations", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
