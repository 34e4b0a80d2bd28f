"""`computewatch.monitor`: a plain PyTorch loop under monitoring with one call.

    import computewatch

    run = computewatch.monitor(Program, hyperparameters, out="runs/gpt")   # W0, data order, chip
    with run:
        for step, batch in run.batches(steps):
            loss = run.program.train_step(run.model, run.optimizer, run.scheduler, batch)
            run.step(loss)

How the run is recorded is ``config=RunConfig(...)`` (`computewatch.prover.config`: chips,
checkpoints, the distributed strategy, threads, nonce, resume), the same object every entry point
takes; its defaults are below.

``Program`` is the training program (docs/formats.md, "Training program"): a top-level class or
function of the caller's code, called as ``Program(hyperparameters, data_dir)`` here exactly as
the Verifier will call it. `monitor` decides the rest:

- dataset commitment over ``program.sample(i)`` for ``i < len(program)`` (or ``samples=N``);
- a fresh nonce (rank 0's under torch.distributed), hence the run seed; W0 from
  ``program.build_model(init_generator(seed))``, built twice (under two global RNG states) and
  refused, naming the tensor, unless both agree: the Verifier rebuilds it in its own process;
  the batches in the committed order
  (`computewatch.formats.seed.batches`), rank r taking its contiguous part of each;
- the code digest over the defining file and the modules imported from its folder;
- deterministic CPU kernels at the current thread count, the global RNG seeded per rank;
- a checkpoint every 100 steps (``checkpoint.every``); the Prover key made in ``<out>/keys``;
- the chip of each rank: the r-th chip of ``chip.dir``, or chips provisioned under
  ``<out>/chips`` at the demo's rate (like `computewatch train`), or none with
  ``chip.enabled=False``;
- under torch.distributed, the model wrapped for ``distributed.strategy`` ("ddp" or "fsdp").
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from computewatch.crypto.errors import FormatError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.manifest import MANIFEST_FILE, read_manifest
from computewatch.formats.program import TrainingProgram
from computewatch.formats.seed import (
    batches,
    derive_run_seed,
    init_generator,
    new_nonce,
)
from computewatch.formats.storage import RunStorage, StoreError
from computewatch.integrations.session import (
    IntegrationError,
    RunRecording,
    check_w0,
    commit_samples,
    program_of,
    rank_and_world,
    seed_process,
    shared,
    verify_command,
)
from computewatch.prover.distributed import shard_model, split_batch
from computewatch.prover.config import LEGACY_FIELDS, RunConfig, resolve_config
from computewatch.prover.recorder import Recorder

__all__ = ["Monitor", "monitor"]

# The flat keyword options `monitor` took before `RunConfig` (deprecated).
_LEGACY_OPTIONS = ("chips", "checkpoint_every", "strategy", "threads", "nonce", "resume", "snapshots_per_day", "chip_seconds_per_step", "chip_secret_seed", "run_id")
assert set(_LEGACY_OPTIONS) <= set(LEGACY_FIELDS)


class Monitor:
    """One process of a monitored run: program, model, optimizer, scheduler, batches, recorder."""

    def __init__(
        self,
        entry: Callable[..., TrainingProgram],
        hyperparameters: dict[str, Any],
        *,
        out: str | os.PathLike[str],
        data_dir: str | os.PathLike[str] | None = None,
        samples: int | None = None,
        key: SigningKey | None = None,
        config: RunConfig | None = None,
        **options: Any,
    ) -> None:
        """`config` says how the run is recorded (chips, checkpoints, the distributed strategy,
        threads, nonce, resume); the flat keyword `options` of before still work, deprecated."""
        config = resolve_config("monitor", config, options, _LEGACY_OPTIONS)
        self.out = Path(out)
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.rank, self.world_size = config.distributed.place(*rank_and_world(), "torch.distributed")
        nonce, run_id, resume, threads = config.nonce, config.run_id, config.resume, config.threads
        root, module, files = program_of(entry)
        self.entry = f"{module}:{entry.__qualname__}"
        storage = RunStorage(self.out)
        existing = storage.exists(MANIFEST_FILE)
        if existing and not resume:
            raise StoreError(f"{self.out} already holds a run; pass RunConfig(resume=True) to continue it or use a new folder")
        if existing:
            pre = read_manifest(storage).precommitment
            nonce, run_id = pre.nonce, pre.run_id
        seed_threads = threads or torch.get_num_threads()
        # Built exactly as the Verifier builds it: entry(hyperparameters, data_dir).
        self.program: TrainingProgram = entry(hyperparameters, None if data_dir is None else Path(data_dir))
        for name in ("build_model", "build_optimizer", "build_scheduler", "sample", "collate", "train_step", "loss"):
            if not callable(getattr(self.program, name, None)):
                raise IntegrationError(f"{self.entry} returned an object without {name}(): not a training program (docs/formats.md)")
        self.commitment = commit_samples(self.program, samples)
        self.nonce = shared(nonce if nonce is not None else (new_nonce() if self.rank == 0 else None))
        self.seed = derive_run_seed(self.commitment.root, self.nonce)
        seed_process(self.seed, self.rank, seed_threads)
        model = self.program.build_model(init_generator(self.seed))
        check_w0(lambda: self.program.build_model(init_generator(self.seed)), model)  # before the first step
        layout = None
        if self.world_size > 1:
            model, layout = shard_model(model, config.distributed.strategy, self.world_size)
        self.model = model
        self.optimizer = self.program.build_optimizer(model)
        self.scheduler = self.program.build_scheduler(self.optimizer)
        # The resumed run's id and nonce, and the thread count the seed was fixed with.
        self.config = dataclasses.replace(config, run_id=run_id, nonce=self.nonce, threads=seed_threads)
        self._recording = RunRecording(self.out, self.config)
        self._start: dict[str, Any] = dict(hyperparameters=hyperparameters, entry=self.entry, parts=[("", root, files)], layout=layout, key=key)
        self.recorder: Recorder | None = None
        self._step: int | None = None
        self._ids: list[int] = []

    # ---- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Monitor:
        """Write the manifest, have the chip log the precommitment, checkpoint W0 (or resume)."""
        self.recorder = self._recording.start(
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            commitment=self.commitment,
            nonce=self.nonce,
            rank=self.rank,
            world_size=self.world_size,
            **self._start,
        )
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._recording.finish(exc)

    @property
    def start_step(self) -> int:
        """The first step still to train (0, or the resume point); known once the run is entered."""
        if self.recorder is None:
            raise IntegrationError("enter the Monitor (`with run:`) before taking batches")
        return self.recorder.start_step

    @property
    def run_dir(self) -> Path:
        return self.out

    # ---- per step ----------------------------------------------------------------------------------
    def batches(self, steps: int) -> Iterator[tuple[int, Any]]:
        """(step, batch) for steps ``start_step .. steps - 1`` in the committed order; the batch is
        ``program.collate`` of this rank's part of the global batch."""
        size = getattr(self.program, "batch_size", None)
        if not isinstance(size, int) or size < 1:
            raise IntegrationError(f"{self.entry}: batch_size must be a positive integer (the global batch), got {size!r}")
        todo = max(steps - self.start_step, 0)
        for step, ids in batches(self.seed, len(self.commitment), size, todo, self.start_step):
            mine = split_batch(ids, self.rank, self.world_size) if self.world_size > 1 else ids
            self._step, self._ids = step, ids
            batch = self.program.collate([self.program.sample(i) for i in mine])
            self._recording.pin_rng()  # whatever the loop drew between steps does not reach this one
            yield step, batch

    def step(self, loss: float | torch.Tensor | None = None) -> list[Any]:
        """Record the optimizer step of the last batch (call right after it); returns the chip's
        snapshot records."""
        if self._step is None:
            raise FormatError("Monitor.step called before a batch was taken from Monitor.batches")
        step, self._step = self._step, None
        return self._recording.record(step, self._ids, loss)

    def verify_command(self) -> str:
        """The `computewatch verify` command that checks this run."""
        data = (self._recording.run_id, self.data_dir) if self.data_dir is not None and self._recording.run_id else None
        return verify_command(self.out, self._recording.options.chips_dir, data)


def monitor(
    entry: Callable[..., TrainingProgram],
    hyperparameters: dict[str, Any],
    *,
    out: str | os.PathLike[str],
    config: RunConfig | None = None,
    **options: Any,
) -> Monitor:
    """Monitor a plain PyTorch loop: see `Monitor` for the arguments, `RunConfig` for the options
    and the module doc for the loop."""
    return Monitor(entry, hyperparameters, out=out, config=config, **options)
