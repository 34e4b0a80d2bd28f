"""Timing attack: swap the true weights out for innocent ones whenever a snapshot is due
(paper §4, attack table row "swap true weights for fakes before a scheduled snapshot").

The cheater trains two models on the same batches: the run it declares (the honest model, whose
transcript it submits) and the run it really wants (an illicit model at three times the
learning rate). It keeps the illicit weights in the chip's memory for one step in four and puts
the declared ones back for the rest, betting that snapshots fall on the declared stretches.
Against a predictable trigger (snapshots every 1/f days) it knows when a snapshot is due and is
never caught. Against the chip's trigger (Poisson arrivals in busy time from a seed only the
firmware holds, `formats.schedule`) it cannot know: a snapshot that fires while the illicit
weights are loaded logs their digest, which the declared transcript does not reproduce (the
Verifier's `snapshots` check). With the illicit weights loaded for L busy-days at rate f the
arrivals landing there are Poisson(f*L), so the detection probability is 1 - exp(-f*L)
whatever the cheater's pattern.

The first trials are real: a monitored training run on a fresh chip, the swap done around the
chip's step boundary, the transcript verified by `computewatch.verifier.verify`; each must
agree with the schedule model on the chip's revealed schedule. The remaining trials draw fresh
schedule seeds through the chip's own arrival function and apply the same model.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from computewatch.adversary.suite import (
    Context,
    Trial,
    get_attack,
    register,
    result_from_trials,
)
from computewatch.adversary.world import RUN, verdict_trial, verify_runs

if TYPE_CHECKING:  # torch loads when an attack runs, not when `attack list` names it
    import torch

__all__ = ["SNAPSHOTS_PER_DAY", "STEPS", "STEP_SECONDS", "illicit_steps", "predicted_rate", "swapping_run"]

STEPS = 16  # steps of the run on one chip
STEP_SECONDS = 1800.0  # busy seconds per step
SNAPSHOTS_PER_DAY = 12.0  # f: about four snapshots over the run, one expected on illicit steps
_PERIOD = 4  # the illicit weights are loaded on one step in four
_REAL_TRIALS = 3
_NS = 1_000_000_000


def illicit_steps(steps: int = STEPS) -> list[int]:
    """Steps (0-based) whose end state the chip sees with the illicit weights loaded."""
    return [t for t in range(steps) if t % _PERIOD == _PERIOD - 1]


def predicted_rate(steps: int = STEPS) -> float:
    """1 - exp(-f*L), L the busy-days with the illicit weights loaded."""
    illicit_days = len(illicit_steps(steps)) * STEP_SECONDS / 86_400
    return -math.expm1(-SNAPSHOTS_PER_DAY * illicit_days)


def _caught_by_schedule(seed: bytes, illicit: set[int]) -> bool:
    """Whether any arrival of the schedule lands in an illicit step (a trigger inside step t's
    busy time snapshots the state at the end of step t)."""
    from computewatch.formats.schedule import arrivals

    step_ns = int(STEP_SECONDS * _NS)
    return any((t - 1) // step_ns in illicit for t in arrivals(seed, SNAPSHOTS_PER_DAY, 0, STEPS * step_ns))


class _SwappingChip:
    """Passes the Recorder's calls to the chip; around the step boundaries the cheater chose it
    loads the illicit weights into the chip's memory and puts the declared ones back after."""

    def __init__(self, chip: Any, illicit_model: torch.nn.Module, illicit: set[int]) -> None:
        self.chip, self.serial = chip, chip.serial
        self.illicit_model, self.illicit = illicit_model, illicit
        self._tensors: list[torch.Tensor] = []
        # A careful cheater lets its step commitment (issue 19) finish hashing the declared
        # weights before it loads the illicit ones, so its committed chain stays consistent and
        # only a snapshot can expose the swap (what this attack measures).
        self.before_swap: Any = None

    def attach(self, tensors: Sequence[torch.Tensor], storage_dir: Any) -> Any:
        self._tensors = list(tensors)
        return self.chip.attach(tensors, storage_dir)

    def log_precommitment(self, digest: bytes, run_id: str) -> Any:
        return self.chip.log_precommitment(digest, run_id)

    def log_memory_map(self, memory_map: dict[str, Any], run_id: str) -> Any:
        return self.chip.log_memory_map(memory_map, run_id)

    def step_boundary(self, step: int, busy_seconds: float) -> list[Any]:
        if step - 1 not in self.illicit:  # the Recorder names the boundary after step t as t + 1
            return self.chip.step_boundary(step, busy_seconds)
        if self.before_swap is not None:
            self.before_swap()
        declared = [t.detach().clone() for t in self._tensors]
        import torch

        with torch.no_grad():
            for t, p in zip(self._tensors, self.illicit_model.parameters(), strict=True):
                t.copy_(p)
            try:
                return self.chip.step_boundary(step, busy_seconds)
            finally:
                for t, d in zip(self._tensors, declared, strict=True):
                    t.copy_(d)


def swapping_run(out: Path, chip_secret: bytes, illicit: set[int]) -> Path:
    """The cheater's monitored run: declares (and records) the honest model, really trains an
    illicit one alongside and swaps it into the chip's memory at the chosen steps."""
    import copy
    import dataclasses
    import os

    from computewatch.chip import Chip, provision_chips
    from computewatch.formats.dataset import DatasetCommitment
    from computewatch.formats.program import deterministic_cpu
    from computewatch.formats.seed import batches, derive_run_seed, init_generator
    from computewatch.prover.config import CheckpointConfig, ChipConfig, RunConfig
    from computewatch.prover.recorder import Recorder
    from computewatch.prover.runner import demo_program, isolated_torch_state
    from computewatch.prover.workloads import preset

    declared = preset(RUN["preset"], total_steps=STEPS, **RUN["overrides"])
    really = dataclasses.replace(declared, lr=declared.lr * 3)
    corpus = declared.dataset()
    commitment = DatasetCommitment.from_samples(corpus.sample(i) for i in range(len(corpus)))
    nonce = os.urandom(32)
    seed = derive_run_seed(commitment.root, nonce)
    chip = Chip.open(provision_chips(out / "chips", 1, snapshots_per_day=SNAPSHOTS_PER_DAY, secret_seed=chip_secret)[0])
    chip.boot()
    with isolated_torch_state():
        deterministic_cpu(1)
        model = declared.build_model(init_generator(seed))
        shadow = copy.deepcopy(model)
        optimizer = declared.build_optimizer(model)
        scheduler = declared.build_scheduler(optimizer)
        shadow_opt = really.build_optimizer(shadow)
        shadow_sched = really.build_scheduler(shadow_opt)
        hyperparameters = {"workload": declared.hyperparameters, "run": {"steps": STEPS, "world_size": 1, "strategy": "single"}}
        swapping = _SwappingChip(chip, shadow, illicit)
        try:
            with Recorder(out, model=model, optimizer=optimizer, scheduler=scheduler, hyperparameters=hyperparameters,
                          dataset=commitment, nonce=nonce, program=demo_program(), chip=swapping,
                          config=RunConfig(checkpoint=CheckpointConfig(every=RUN["checkpoint_every"]),
                                           chip=ChipConfig(seconds_per_step=STEP_SECONDS))) as rec:
                committer = getattr(rec, "_committer", None)
                swapping.before_swap = committer.wait if committer is not None else None
                for t, ids in batches(seed, len(corpus), declared.batch_size, STEPS):
                    batch = declared.collate([corpus.sample(i) for i in ids])
                    really.train_step(shadow, shadow_opt, shadow_sched, batch)
                    loss = declared.train_step(model, optimizer, scheduler, batch)
                    rec.step(t, ids, loss)
        finally:
            chip.close()
    return out


def _real_trial(ctx: Context, secret: bytes, illicit: set[int], expected: str | None) -> tuple[Trial, bool]:
    run = swapping_run(ctx.scratch("swapping-run") / "run", secret, illicit)
    trial = verdict_trial(verify_runs([run]), expected)
    log = min((run / "chips").glob("chip-*")) / "log" / "chip.log"
    entries = [json.loads(line) for line in log.read_bytes().split(b"\n")[:-1]]
    seeds = [bytes.fromhex(e["body"]["seed"]) for e in entries if e["kind"] == "schedule-reveal"]
    model = bool(seeds) and _caught_by_schedule(seeds[0], illicit)
    return trial, model == trial.caught


@register(
    "swap-before-snapshot",
    paper_ref="§4 (random snapshot times)",
    family="timing",
    kind="rate",
    expected="verifier.snapshots",
    summary="Trains an illicit model (3x lr) beside the declared one and loads its weights into the chip for one "
    "step in four, putting the declared weights back for the rest, betting that snapshots fall on declared steps.",
    default_trials=400,
    max_trials=200_000,
)
def _swap(ctx: Context, trials: int, seed: int) -> Any:
    attack = get_attack("swap-before-snapshot")
    illicit = set(illicit_steps())
    rng = random.Random(seed)
    out: list[Trial] = []
    agree = real = 0
    for i in range(trials):
        secret = rng.randbytes(32)
        if i < _REAL_TRIALS:
            trial, consistent = _real_trial(ctx, secret, illicit, attack.expected)
            real += 1
            agree += consistent
            out.append(trial)
            continue
        caught = _caught_by_schedule(secret, illicit)  # a fresh epoch seed, as the firmware draws one
        out.append(Trial(caught, attack.expected if caught else None, (attack.expected,) if caught and attack.expected else (),
                         "a snapshot logged the illicit weights: the declared transcript does not reproduce it" if caught else ""))
    # A predictable trigger (every 1/f days, known to the cheater): it shows the declared weights
    # exactly at every due step and keeps the illicit ones loaded at all others.
    period_steps = 86_400 / SNAPSHOTS_PER_DAY / STEP_SECONDS
    due = {math.ceil((j + 1) * period_steps) - 1 for j in range(int(STEPS / period_steps))}
    loaded = set(range(STEPS)) - due
    return result_from_trials(
        attack,
        out,
        predicted=predicted_rate(),
        extra={
            "snapshots_per_day": SNAPSHOTS_PER_DAY,
            "illicit_busy_days": len(illicit) * STEP_SECONDS / 86_400,
            "real_trials": real,
            "real_trials_matching_the_schedule_model": agree,
            "real_trials_caught": sum(t.caught for t in out[:real]),
            "predictable_trigger_detection_rate": float(bool(due & loaded)),
            "predictable_trigger_illicit_share": len(loaded) / STEPS,
            "formula": "1 - exp(-f * L): L busy-days with illicit weights loaded",
        },
    )
