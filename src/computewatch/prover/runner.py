"""The demo training run under monitoring, as `computewatch train` and the tests run it.

One process, or ``nproc`` gloo processes (torch.multiprocessing), each rank bound to one chip.
Chips come from ``chips_dir`` (every sub-folder is a chip state dir, taken in name order) or are
provisioned fresh under ``<out>/chips`` with the given snapshot rate.

Snapshot timing: a chip's clock counts busy time. By default each step reports a simulated
``chip_seconds_per_step`` (60 s), so that with the demo rate (24 snapshots per busy day) a
200-step run sees about three snapshots per chip in seconds of real time; pass
``chip_seconds_per_step=None`` to report the measured wall time of each step instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from computewatch import _faults
from computewatch.chip.chip import MAX_STEP_BUSY_S
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.firmware import FirmwarePolicy
from computewatch.formats.manifest import MANIFEST_FILE, read_manifest
from computewatch.formats.program import ProgramSource, deterministic_cpu
from computewatch.formats.seed import (
    batches,
    derive_run_seed,
    init_generator,
    new_nonce,
    substream,
)
from computewatch.formats.storage import RunStorage, StoreError
from computewatch.prover.distributed import (
    STRATEGIES,
    free_port,
    init_gloo,
    shard_model,
    split_batch,
)
from computewatch.prover.config import (
    DEMO_CHIP_SECONDS_PER_STEP,
    DEMO_SNAPSHOTS_PER_DAY,
    CheckpointConfig,
    ChipConfig,
    DistributedConfig,
    RunConfig,
)
from computewatch.prover.recorder import Recorder
from computewatch.prover.workloads import Workload, preset
from computewatch.prover.workloads.program import ENTRY as DEMO_ENTRY

__all__ = [
    "DEMO_CHIP_SECONDS_PER_STEP",
    "DEMO_SNAPSHOTS_PER_DAY",
    "TrainConfig",
    "TrainResult",
    "build_run",
    "demo_program",
    "isolated_torch_state",
    "max_processes",
    "run_hyperparameters",
    "train",
]

@dataclass(frozen=True)
class TrainConfig:
    out: Path
    preset: str = "tiny"
    steps: int = 200
    nproc: int = 1
    strategy: str = "ddp"  # for nproc > 1: "ddp" or "fsdp"
    chips_dir: Path | None = None
    snapshots_per_day: float = DEMO_SNAPSHOTS_PER_DAY
    chip_seconds_per_step: float | None = DEMO_CHIP_SECONDS_PER_STEP
    checkpoint_every: int = 50
    threads: int | None = None
    nonce: bytes | None = None
    run_id: str | None = None
    resume: bool = False
    monitor: bool = True  # False: no chips (transcript only)
    # Reproducible chips (tests, demos): derive new chips' device secrets from this seed, so
    # their snapshot schedules repeat. Never for real monitoring: it makes snapshots predictable.
    chip_secret_seed: bytes | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # Workload field overrides

    def run_config(self, rank: int = 0) -> RunConfig:
        """How rank `rank`'s Recorder records (the options `RunConfig` declares for every entry point)."""
        return RunConfig(
            run_id=self.run_id,
            nonce=self.nonce,
            resume=self.resume,
            threads=self.threads,
            chip=ChipConfig(
                enabled=self.monitor,
                dir=self.chips_dir if self.monitor else None,
                snapshots_per_day=self.snapshots_per_day,
                seconds_per_step=self.chip_seconds_per_step,
                secret_seed=self.chip_secret_seed,
            ),
            checkpoint=CheckpointConfig(every=self.checkpoint_every),
            # One process names no strategy (validate() only checks it for nproc > 1).
            distributed=DistributedConfig(strategy=self.strategy if self.nproc > 1 else "ddp", world_size=self.nproc, rank=rank),
        )

    def validate(self) -> None:
        """Refuse a configuration that cannot run, before anything is created (no run folder,
        chip or key is made for a run that would fail on its options)."""
        if not isinstance(self.nproc, int) or not 1 <= self.nproc <= max_processes():
            raise FormatError(f"nproc must be 1 to {max_processes()} (four per core of this machine), got {self.nproc!r}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise FormatError(f"steps must be a whole number >= 0, got {self.steps!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1:
            raise FormatError(f"checkpoint_every must be a whole number >= 1, got {self.checkpoint_every!r}")
        if self.nproc > 1 and self.strategy not in STRATEGIES:
            raise FormatError(f"unknown distributed strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.chip_seconds_per_step is not None and not 0 <= self.chip_seconds_per_step <= MAX_STEP_BUSY_S:
            raise FormatError(f"chip_seconds_per_step must be 0 to {MAX_STEP_BUSY_S:g} (a day), got {self.chip_seconds_per_step!r}")
        _workload(self)  # an unknown preset or override fails here, not inside every spawned rank
        if self.monitor and self.chips_dir is None:
            FirmwarePolicy(snapshots_per_day=self.snapshots_per_day)  # the rate new chips would get
        if self.monitor and self.chips_dir is not None:
            found = _chips_in(Path(self.chips_dir))
            if len(found) < self.nproc:
                raise ComputewatchError(f"{self.chips_dir} holds {len(found)} chips; {self.nproc} processes need one each")
        holds_run = RunStorage(self.out, create=False).exists(MANIFEST_FILE) if Path(self.out).is_dir() else False
        if self.resume and not holds_run:
            raise StoreError(f"{self.out} holds no run to resume (no {MANIFEST_FILE}); start one without resume")
        if holds_run and not self.resume:
            raise StoreError(f"{self.out} already holds a run; resume it (--resume) or choose a new directory")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    chip_dirs: list[Path]
    steps: int
    start_step: int


def demo_program() -> ProgramSource:
    """The demo's training program: the workloads package, entry ``program:make_program``."""
    return ProgramSource.from_folder(Path(__file__).resolve().parent / "workloads", DEMO_ENTRY)


def run_hyperparameters(workload: Workload, config: TrainConfig) -> dict[str, Any]:
    return {
        "workload": workload.hyperparameters,
        "run": {
            "steps": config.steps,
            "world_size": config.nproc,
            "strategy": "single" if config.nproc == 1 else config.strategy,
        },
    }


def _workload(config: TrainConfig) -> Workload:
    overrides = {"total_steps": max(config.steps, 1), **config.overrides}
    return preset(config.preset, **overrides)


def max_processes() -> int:
    """Ranks one machine may run: four per core, at least eight (tests oversubscribe a little to
    cover uneven shards; thousands of gloo processes only exhaust the machine). The command
    line is stricter: at most the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(8, 4 * cores)


def _threads(config: TrainConfig) -> int:
    return config.threads or max(1, (os.cpu_count() or 1) // config.nproc)


def _chip_dirs(config: TrainConfig) -> list[Path]:
    if not config.monitor:
        return []
    if config.chips_dir is not None:
        found = _chips_in(Path(config.chips_dir))
        if len(found) < config.nproc:
            raise ComputewatchError(f"{config.chips_dir} holds {len(found)} chips; {config.nproc} processes need one each")
        return found[: config.nproc]
    from computewatch.chip import provision_chips

    root = Path(config.out) / "chips"
    have = _chips_in(root)  # a resumed run keeps its chips; a retried one keeps those already made
    if len(have) < config.nproc:
        provision_chips(
            root, config.nproc - len(have), snapshots_per_day=config.snapshots_per_day,
            secret_seed=config.chip_secret_seed, first_index=len(have),
        )
    return _chips_in(root)[: config.nproc]


def _chips_in(folder: Path) -> list[Path]:
    # A chip state dir holds its sealed identity; the chipmaker's folder and stray files do not count.
    if not folder.is_dir():
        return []
    # Hidden folders are chips still being made (chip.manufacture_chip): not chips yet.
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p / "sealed").is_dir())


@contextlib.contextmanager
def isolated_torch_state() -> Iterator[None]:
    """Restore torch's thread count, deterministic-algorithms flag and global RNG afterwards.

    An in-process run fixes all three for exact replay; the caller's process gets them back.
    """
    threads, deterministic, rng = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_rng_state(rng)


def train(config: TrainConfig, *, progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Run the demo workload under monitoring; spawns processes when ``config.nproc > 1``."""
    config.validate()
    storage = RunStorage(config.out)
    if config.resume:
        pre = read_manifest(storage).precommitment
        config = replace(config, nonce=pre.nonce, run_id=pre.run_id)
    elif config.nonce is None:
        config = replace(config, nonce=new_nonce())
    if config.run_id is None:
        # One run id for every rank: a rank that made its own would log a precommitment that
        # no signed manifest carries.
        config = replace(config, run_id=uuid.uuid4().hex)
    chip_dirs = _chip_dirs(config)
    if config.nproc == 1:
        with isolated_torch_state():
            start = _run_rank(0, config, chip_dirs, None, progress)
    else:
        import torch.multiprocessing as mp

        from computewatch._threads import prefer_passive_threads

        prefer_passive_threads()  # the spawned ranks load torch afresh: their idle threads sleep
        try:
            # The ranks inherit the crash tests' fault handlers (computewatch._faults), if any.
            args = (config, chip_dirs, free_port(), os.getpid(), _faults.current())
            mp.spawn(_spawned_rank, args=args, nprocs=config.nproc, join=True)
        except mp.ProcessRaisedException as exc:  # a rank's own error, with its traceback as text
            lines = str(exc).strip().splitlines()
            raise ComputewatchError(f"a training process failed: {lines[-1] if lines else exc}") from exc
        except mp.ProcessExitedException as exc:  # killed (signal) or exited without an exception
            raise ComputewatchError(f"a training process died: {exc}; resume the run with resume=True") from exc
        start = 0
    return TrainResult(Path(config.out), chip_dirs, config.steps, start)


def _spawned_rank(
    rank: int, config: TrainConfig, chip_dirs: list[Path], port: int, parent: int, faults: tuple[Any, ...] = ()
) -> None:
    _die_with_parent(parent)
    _faults.install(*faults)
    _run_rank(rank, config, chip_dirs, port, None)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this rank when the launching process dies (even by SIGKILL), so a
    killed `computewatch train` leaves no orphaned ranks holding chips and ports."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: orphans stay possible
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def build_run(config: TrainConfig, rank: int = 0) -> dict[str, Any]:
    """The workload, dataset commitment, seed and fresh model/optimizer/scheduler of a run."""
    workload = _workload(config)
    corpus = workload.dataset()
    commitment = DatasetCommitment.from_samples(corpus.sample(i) for i in range(len(corpus)))
    assert config.nonce is not None
    seed = derive_run_seed(commitment.root, config.nonce)
    model = workload.build_model(init_generator(seed))
    return {"workload": workload, "corpus": corpus, "commitment": commitment, "seed": seed, "model": model}


def _run_rank(rank: int, config: TrainConfig, chip_dirs: list[Path], port: int | None, progress: Callable[[int, int], None] | None) -> int:
    world = config.nproc
    threads = _threads(config)
    deterministic_cpu(threads)
    if port is not None:
        init_gloo(rank, world, port)
    chip = None
    try:
        run = build_run(config, rank)
        workload, corpus, seed = run["workload"], run["corpus"], run["seed"]
        model = run["model"]
        # The global RNG (dropout, anything a model draws during training) starts from the run
        # seed too, one stream per rank, so the recorded RNG states are reproducible.
        torch.manual_seed(substream(seed, f"global-rng/rank-{rank}"))
        layout = None
        if world > 1:
            model, layout = shard_model(model, config.strategy, world)
        optimizer = workload.build_optimizer(model)
        scheduler = workload.build_scheduler(optimizer)
        if chip_dirs:
            from computewatch.chip import Chip

            chip = Chip.open(chip_dirs[rank])
            chip.boot()
        assert config.nonce is not None  # train() draws one
        with Recorder(
            config.out,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            hyperparameters=run_hyperparameters(workload, config),
            dataset=run["commitment"],
            nonce=config.nonce,
            program=demo_program(),
            chip=chip,
            layout=layout,
            config=config.run_config(rank),
        ) as rec:
            todo = config.steps - rec.start_step
            for step, ids in batches(seed, len(corpus), workload.batch_size, max(todo, 0), rec.start_step):
                mine = split_batch(ids, rank, world) if world > 1 else ids
                loss = workload.train_step(model, optimizer, scheduler, workload.collate([corpus.sample(i) for i in mine]))
                rec.step(step, ids, loss)
                if progress is not None:
                    progress(step + 1, config.steps)
        return rec.start_step
    finally:
        if chip is not None:
            chip.close()
        if port is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
