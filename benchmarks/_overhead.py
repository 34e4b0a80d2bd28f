"""Monitoring overhead: the demo workload with and without the Recorder, in one process.

Method. Two copies of the same run (same seed, same batches, so the same work per step) train
side by side in this process: a plain loop, and the same loop under a `Recorder` bound to a
chip whose firmware snapshots at ``snapshots_per_day`` (0.1/day, Table 1's rate) with the
measured wall time of each step as busy time, checkpointing every ``checkpoint_every`` steps.
Plain and monitored steps alternate one by one (``block`` = 1; the order within a pair flips
every repetition), so a burst of load from other processes hits both sides of a pair alike.
``overhead`` = total monitored time / total plain time - 1, everything included (checkpoint
captures, the final flush of queued writes); ``overhead_median_pair`` is the median over pairs
of the monitored/plain time ratio - 1 (robust to outliers, blind to rare costs such as a
checkpoint). ``overhead_accounted`` adds the time spent inside `Recorder.step` to the
background writer's working time and divides by the plain loop's time: a direct upper bound
that load from other processes cannot fake. Setup (dataset commitment, manifest,
precommitment, W0 checkpoint) happens before the clock starts. Training runs on one thread by
default so the numbers are stable on a small shared machine.

At 0.1/day a bench window almost surely contains no snapshot, so a second measurement forces
snapshots (a chip whose clock advances an hour per step at 24/day) and reports the mean stall
per snapshot, and what that stall costs amortised at the real rate.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from computewatch.formats.program import deterministic_cpu
from computewatch.formats.seed import batches
from computewatch.prover.config import CheckpointConfig, ChipConfig, RunConfig
from computewatch.prover.recorder import Recorder
from computewatch.prover.runner import (
    TrainConfig,
    build_run,
    demo_program,
    isolated_torch_state,
    run_hyperparameters,
)

__all__ = ["FORCED_STEPS", "measure_overhead", "total_steps"]

_DAY_S = 86_400.0
FORCED_STEPS = 10  # steps of the forced-snapshot measurement


def total_steps(block: int, repeats: int, forced_steps: int = FORCED_STEPS) -> int:
    """Training steps the measurement takes (what its progress callback counts to)."""
    return 2 * block * repeats + forced_steps


class _Loop:
    """One copy of the run: model, optimizer, scheduler and its position in the batch sequence."""

    def __init__(self, config: TrainConfig, total: int) -> None:
        run = build_run(config)
        self.workload, self.corpus, self.commitment = run["workload"], run["corpus"], run["commitment"]
        self.model = run["model"]
        self.optimizer = self.workload.build_optimizer(self.model)
        self.scheduler = self.workload.build_scheduler(self.optimizer)
        # Materialised up front: the data order is computed once per epoch, outside any timed block.
        self._batches = iter(list(batches(run["seed"], len(self.corpus), self.workload.batch_size, total)))

    def run(self, n: int, after: Callable[[int, list[int], float], Any] | None) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            step, ids = next(self._batches)
            batch = self.workload.collate([self.corpus.sample(i) for i in ids])
            loss = self.workload.train_step(self.model, self.optimizer, self.scheduler, batch)
            if after is not None:
                after(step, ids, loss)
        return time.perf_counter() - t0


def _provision(root: Path, rate: float) -> Any:
    from computewatch.chip import Chip, provision_chips

    chip = Chip.open(provision_chips(root, 1, snapshots_per_day=rate)[0])
    chip.boot()
    return chip


def _recorder(loop: _Loop, config: TrainConfig, run_dir: Path, chip: Any, k: int, chip_s: float | None) -> Recorder:
    return Recorder(
        run_dir,
        model=loop.model,
        optimizer=loop.optimizer,
        scheduler=loop.scheduler,
        hyperparameters=run_hyperparameters(loop.workload, config),
        dataset=loop.commitment,
        nonce=config.nonce or b"bench",
        program=demo_program(),
        chip=chip,
        config=RunConfig(checkpoint=CheckpointConfig(every=k), chip=ChipConfig(seconds_per_step=chip_s)),
    )


def measure_overhead(
    *,
    preset: str = "small",
    block: int = 1,
    repeats: int = 200,
    checkpoint_every: int = 100,
    snapshots_per_day: float = 0.1,
    forced_steps: int = FORCED_STEPS,
    threads: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the interleaved measurement; returns the JSON-ready result."""
    with isolated_torch_state():
        if threads is not None:
            deterministic_cpu(threads)
        return _measure(preset, block, repeats, checkpoint_every, snapshots_per_day, forced_steps, progress)


def _measure(
    preset: str,
    block: int,
    repeats: int,
    checkpoint_every: int,
    snapshots_per_day: float,
    forced_steps: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    total = block * repeats
    config = TrainConfig(out=Path("."), preset=preset, steps=total + forced_steps + 1, nonce=b"computewatch-bench")
    plain, monitored = _Loop(config, total + 2), _Loop(config, total + forced_steps)
    plain.run(2, None)  # warm the process up (allocator, kernels) before timing
    pairs: list[tuple[float, float]] = []
    done = 0
    with tempfile.TemporaryDirectory(prefix="computewatch-bench-") as tmp:
        chip = _provision(Path(tmp) / "chips", snapshots_per_day)
        rec = _recorder(monitored, config, Path(tmp) / "run", chip, checkpoint_every, None)
        with rec:
            rec.flush()  # the W0 checkpoint is setup, not steady-state cost
            writer0 = rec.writer_busy_s
            for rep in range(repeats):
                first_plain = rep % 2 == 0
                t_first = (plain if first_plain else monitored).run(block, None if first_plain else rec.step)
                t_second = (monitored if first_plain else plain).run(block, rec.step if first_plain else None)
                pairs.append((t_first, t_second) if first_plain else (t_second, t_first))
                done += 2 * block
                if progress is not None:
                    progress(done, total_steps(block, repeats, forced_steps))
            t0 = time.perf_counter()
            rec.flush()  # queued checkpoint writes belong to the monitored cost
            flush_s = time.perf_counter() - t0
            writer_s = rec.writer_busy_s - writer0
            critical_s = rec.critical_s
            natural = len(rec.snapshots)
        chip.close()
        forced = _forced_snapshots(monitored, config, Path(tmp), forced_steps, total)
        if progress is not None:
            progress(total_steps(block, repeats, forced_steps), total_steps(block, repeats, forced_steps))
    t_plain = sum(p for p, _ in pairs)
    t_mon = sum(m for _, m in pairs) + flush_s
    ratios = sorted(m / p for p, m in pairs)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else 0.5 * (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2])
    step_s = t_plain / total
    stall = forced["mean_stall_s"]
    return {
        "steps_per_s_plain": total / t_plain,
        "steps_per_s_monitored": total / t_mon,
        "overhead": t_mon / t_plain - 1.0,
        "overhead_median_pair": median - 1.0,
        # Direct accounting: time inside Recorder.step plus the writer thread's working time,
        # over the plain loop's time. Insensitive to load from other processes.
        "overhead_accounted": (critical_s + writer_s) / t_plain,
        "recorder_step_s": critical_s / total,
        "writer_busy_s": writer_s,
        "preset": preset,
        "steps_per_mode": total,
        "block": block,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "checkpoint_every": checkpoint_every,
        "checkpoints_in_window": total // checkpoint_every,
        "snapshots_per_day": snapshots_per_day,
        "snapshots_in_window": natural,
        "forced_snapshot": {
            **forced,
            "stall_over_step_time": stall / step_s if stall is not None else None,
            # At f per busy day, a chip stalls f * stall seconds per day of work.
            "amortized_overhead_at_f": snapshots_per_day * stall / _DAY_S if stall is not None else None,
        },
    }


def _forced_snapshots(loop: _Loop, config: TrainConfig, tmp: Path, steps: int, start: int) -> dict[str, Any]:
    """Snapshots on nearly every step: a chip whose busy clock advances an hour per step at 24/day."""
    chip = _provision(tmp / "chips-forced", 24.0)
    stalls: list[float] = []
    rec = _recorder(loop, config, tmp / "run-forced", chip, 10**6, 3600.0)

    def after(step: int, ids: list[int], loss: float) -> None:
        stalls.extend(s.stall_s for s in rec.step(step - start, ids, loss))

    with rec:
        loop.run(steps, after)
    chip.close()
    return {"snapshots": len(stalls), "mean_stall_s": sum(stalls) / len(stalls) if stalls else None}
