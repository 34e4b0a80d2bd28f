"""What every integration does around a training run, whatever the framework.

- the process's place in the run (`rank_and_world`) and values every rank must share, rank 0's
  (`shared`): the nonce, so that every rank derives the same seed;
- the replay environment: `deterministic_cpu(threads)` and the global RNG of rank r seeded with
  ``substream(seed, "global-rng/rank-r")``, as `computewatch train` does (`seed_process`);
- the chip of this rank (`open_chip`): the r-th chip of a folder, or chips provisioned under
  ``<out>/chips`` like `computewatch train` (rank 0 provisions, the others wait);
- the training program's files (`program_of`, `staged_program`): the caller's own files, or
  the integration's program plus the lab's module files under ``user/``;
- a check that the framework built the optimizer and scheduler the precommitted
  hyperparameters rebuild (`check_same_optimizer`), so a setting the program does not model
  fails before the first step instead of in the Verifier's replay;
- a check that W0 is what the Verifier rebuilds from the committed seed (`check_w0`), so an
  initialisation that draws from anything but the seed's generator (PyTorch's default
  initialisation draws from the global RNG) fails before the first step, naming the tensor,
  instead of as ``init`` failed at verification;
- the `computewatch verify` command that checks the run (`verify_command`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from computewatch.crypto.errors import ComputewatchError
from computewatch.formats.dataset import DatasetCommitment
from computewatch.formats.program import ProgramSource, deterministic_cpu
from computewatch.formats.seed import substream
from computewatch.prover.config import RunConfig
from computewatch.prover.recorder import Recorder

__all__ = [
    "W0_FIX",
    "IntegrationError",
    "MonitorOptions",
    "RunRecording",
    "check_same_optimizer",
    "check_w0",
    "chips_in",
    "commit_samples",
    "open_chip",
    "program_of",
    "rank_and_world",
    "seed_process",
    "shared",
    "staged_program",
    "verify_command",
]

# Directories never taken as part of a lab's program.
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "node_modules"}


class IntegrationError(ComputewatchError):
    """A training setup the monitoring cannot record replayably; the message says what to change."""


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if _dist_ready():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shared(value: Any) -> Any:
    """Rank 0's `value` on every rank (the value itself without torch.distributed)."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def seed_process(seed: bytes, rank: int, threads: int) -> None:
    """The replay environment (thread count, deterministic kernels) and this rank's global RNG."""
    deterministic_cpu(threads)
    torch.manual_seed(substream(seed, f"global-rng/rank-{rank}"))


def commit_samples(source: Any, size: int | None = None) -> DatasetCommitment:
    """The dataset commitment over ``source.sample(i)`` for every i (``size`` or ``len(source)``)."""
    if size is None:
        if not hasattr(source, "__len__"):
            raise IntegrationError(f"{type(source).__name__} has no __len__: pass samples=N, the number of samples in the dataset")
        size = len(source)
    if not isinstance(size, int) or size < 1:
        raise IntegrationError(f"the dataset needs at least one sample, got {size!r}")
    return DatasetCommitment.from_samples(source.sample(i) for i in range(size))


def chips_in(folder: Path) -> list[Path]:
    """Chip state folders in `folder`, in name order (a chip folder holds ``sealed/``)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / "sealed").is_dir())


def open_chip(
    out: Path,
    chips: str | os.PathLike[str] | bool | None,
    rank: int,
    world: int,
    *,
    snapshots_per_day: float,
    secret_seed: bytes | None = None,
) -> Any:
    """This rank's booted chip: the rank-th chip of `chips`, or of ``<out>/chips`` (provisioned
    there when absent, with the given snapshot rate); None when `chips` is False."""
    if chips is False:
        return None
    from computewatch.chip import Chip, provision_chips

    if chips is None or chips is True:
        root = Path(out) / "chips"
        if rank == 0:
            have = len(chips_in(root))
            if have == 0:
                provision_chips(root, world, snapshots_per_day=snapshots_per_day, secret_seed=secret_seed)
            elif have < world:
                raise IntegrationError(f"{root} holds {have} chips, {world} processes need one each; use a new output folder")
        if _dist_ready():
            torch.distributed.barrier()  # rank 0 has provisioned every rank's chip
    else:
        root = Path(chips)
    found = chips_in(root)
    if len(found) < world:
        raise IntegrationError(f"{root} holds {len(found)} chips; {world} processes need one each")
    chip = Chip.open(found[rank])
    chip.boot()
    return chip


# ---- the program's files -------------------------------------------------------------------------
def _module_file(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file and str(file).endswith(".py") else None


def program_of(obj: Any) -> tuple[Path, str, tuple[str, ...]]:
    """(root, module, files) of the code that defines `obj` (a class or function).

    The root is the folder of the defining file; the files are that file and every module
    already imported from under the root by its own path (``pkg/model.py`` imported as
    ``pkg.model``), so that the program's relative imports resolve when a Verifier loads it.
    """
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    path = _module_file(module) if module is not None else None
    if module is None or path is None:
        raise IntegrationError(f"cannot find the source file of {obj!r}; define it in a .py file")
    if "." in obj.__qualname__:
        raise IntegrationError(f"{obj.__qualname__} must be defined at the top level of {path.name} (the Verifier calls it by name)")
    root = path.parent
    files = {path.name}
    # The defining module may sit in a package (``lab.train``): its siblings are then ``lab.*``.
    prefix = module.__name__[: -len(path.stem)] if module.__name__.endswith(path.stem) else ""
    for name, mod in list(sys.modules.items()):
        file = _module_file(mod) if mod is not None else None
        if file is None or file == path or root not in file.parents:
            continue
        rel = file.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        dotted = ".".join(rel.with_suffix("").parts)
        if name in (dotted, prefix + dotted) or name in (dotted.removesuffix(".__init__"), prefix + dotted.removesuffix(".__init__")):
            files.add(rel.as_posix())
    return root, path.stem, tuple(sorted(files))


@contextlib.contextmanager
def staged_program(entry: str, parts: Sequence[tuple[str, Path, Sequence[str]]]) -> Iterator[ProgramSource]:
    """One program folder from several sources: each part's files under its prefix ("" for the
    top). The folder exists while the context is open (the Recorder reads the files on creation)."""
    with tempfile.TemporaryDirectory(prefix="computewatch-program-") as tmp:
        files = []
        for prefix, root, rels in parts:
            for rel in rels:
                target = f"{prefix}/{rel}" if prefix else rel
                dest = Path(tmp) / target
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes((Path(root) / rel).read_bytes())
                files.append(target)
        yield ProgramSource(entry, Path(tmp), tuple(sorted(files)))


# ---- optimizer check -------------------------------------------------------------------------------
def _inner(optimizer: Any) -> Any:
    # accelerate's AcceleratedOptimizer and Lightning's LightningOptimizer wrap the torch optimizer.
    for attr in ("optimizer", "_optimizer"):
        inner = getattr(optimizer, attr, None)
        if isinstance(inner, torch.optim.Optimizer):
            return inner
    return optimizer


def _groups(optimizer: Any) -> list[tuple[list[int], dict[str, Any]]]:
    out = []
    for group in _inner(optimizer).param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        out.append(([id(p) for p in group["params"]], settings))
    return out


def _scheduler_state(scheduler: Any) -> Any:
    if scheduler is None:
        return None
    state = dict(scheduler.state_dict())
    state.pop("lr_lambdas", None)  # functions, not settings
    return type(scheduler).__name__, state


def check_same_optimizer(actual: Any, actual_scheduler: Any, expected: Any, expected_scheduler: Any) -> None:
    """The framework's optimizer and scheduler equal what the program builds from the
    hyperparameters (class, parameter groups and their settings, scheduler state)."""
    if type(_inner(actual)) is not type(_inner(expected)):
        raise IntegrationError(f"the trainer uses {type(_inner(actual)).__name__}, the recorded program builds {type(_inner(expected)).__name__}")
    got, want = _groups(actual), _groups(expected)
    if [ids for ids, _ in got] != [ids for ids, _ in want]:
        raise IntegrationError("the trainer's optimizer groups the parameters differently from the recorded program")
    for i, ((_, a), (_, b)) in enumerate(zip(got, want, strict=True)):
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise IntegrationError(f"optimizer group {i}: the trainer's settings differ from the recorded program's in {diff}")
    if _scheduler_state(actual_scheduler) != _scheduler_state(expected_scheduler):
        raise IntegrationError(
            f"the trainer's learning-rate scheduler ({_scheduler_state(actual_scheduler)}) differs from the one the "
            f"recorded program builds ({_scheduler_state(expected_scheduler)})"
        )


# ---- W0 check ----------------------------------------------------------------------------------------
W0_FIX = (
    "build_model(generator) must draw every initial value from the generator it is given (the Verifier "
    "rebuilds W0 as program.build_model(init_generator(seed)) in a process of its own); PyTorch's default "
    "initialisation of nn.Linear, nn.Embedding, ... draws from the global RNG instead: re-initialise every "
    "parameter from the generator, e.g. computewatch.integrations.program.init.init_weights(model, generator, "
    "std=0.02), or torch.nn.init.normal_(param, 0.0, 0.02, generator=generator) per parameter"
)
_OTHER_RNG_SEED = 0x5EED_0F_0E1C_C0DE  # any global RNG state unlike the run's: the Verifier's is its own


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def check_w0(rebuild: Any, model: torch.nn.Module, how_to_fix: str = W0_FIX) -> None:
    """`model`'s tensors (parameters and buffers) must equal, bit for bit, what `rebuild()` (the
    Verifier's ``program.build_model(init_generator(seed))``) gives under another global RNG
    state; the first one that differs is named, with `how_to_fix`. The global RNG is restored."""
    state = torch.get_rng_state()
    try:
        torch.manual_seed(_OTHER_RNG_SEED)
        again = {k: v.detach() for k, v in rebuild().state_dict().items()}
    finally:
        torch.set_rng_state(state)
    have = {k: v.detach() for k, v in model.state_dict().items()}
    if set(have) != set(again):
        odd = sorted(set(have) ^ set(again))
        raise IntegrationError(f"W0: the model holds other tensors than the program builds from the committed seed "
                               f"({', '.join(odd[:3])}{', ...' if len(odd) > 3 else ''}); {how_to_fix}")
    for name, want in again.items():
        got = have[name]
        if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(_bits(got), _bits(want)):
            raise IntegrationError(f"W0: {name!r} is not what the committed seed gives (the Verifier's rebuild "
                                   f"differs), so verification would fail its init check; {how_to_fix}")


def verify_command(out: str | Path, chips: str | Path | None = None, data: tuple[str, str | Path] | None = None) -> str:
    """The `computewatch verify` command that checks the run in `out` (chips under ``<out>/chips``
    unless given; ``data=(run_id, folder)`` when the program reads the Prover's data folder)."""
    out = Path(out)
    chip_dir = Path(chips) if chips is not None else out / "chips"
    args = [
        "computewatch", "verify", str(out),
        "--chips", str(chip_dir),
        "--chipmaker-pub", str(chip_dir / "chipmaker" / "chipmaker.pub"),
        "--prover-pub", str(out / "keys" / "prover.pub"),
        "--mode", "exact", "--segments", "all",
    ]  # fmt: skip
    if data is not None:
        args += ["--data", f"{data[0]}={data[1]}"]
    return shlex.join(args)


# ---- recording a framework's run ---------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorOptions:
    """Where (`out`) and how (`config`) a framework integration records (picklable: Lightning's
    spawned ranks get a copy)."""

    out: Path
    config: RunConfig = field(default_factory=RunConfig)

    @property
    def chips(self) -> Path | bool | None:
        """What `open_chip` takes: the chips' folder, False for none, None to provision them."""
        chip = self.config.chip
        return False if not chip.enabled else chip.dir

    @property
    def chips_dir(self) -> Path | None:
        return self.config.chip.dir if self.config.chip.enabled else None

    @property
    def threads(self) -> int:
        return self.config.threads or torch.get_num_threads()

    def verify_command(self, run_id: str | None, source: Any = None) -> str:
        """The verify command; names the data folder when `source` reads one (a `SampleFile`)."""
        folder = getattr(source, "folder", None)
        data = (run_id, folder) if folder is not None and run_id is not None else None
        return verify_command(self.out, self.chips_dir, data)


class RunRecording:
    """The Recorder and chip of one rank, driven from a framework's hooks.

    `start` before the first step (after W0 is in place), `pin_rng` when a step begins, `record`
    after each optimizer step, `finish` at the end (or on an error). Pinning the global RNG to the
    state recorded after the previous step undoes whatever the framework drew between steps
    (a data loader's base seed at an epoch start, ...), so a replay that restores a checkpoint's
    RNG state and runs the steps sees the same dropout masks.
    """

    def __init__(self, out: str | os.PathLike[str] | MonitorOptions, config: RunConfig | None = None) -> None:
        if isinstance(out, MonitorOptions):
            if config is not None:
                raise TypeError("RunRecording(): MonitorOptions already holds the configuration")
            self.options = out
        else:
            self.options = MonitorOptions(Path(out), RunConfig() if config is None else config)
        if not isinstance(self.options.config, RunConfig):
            raise TypeError(f"RunRecording(): config must be a RunConfig, got {type(self.options.config).__name__}")
        self.recorder: Recorder | None = None
        self.run_id: str | None = None
        self.chip: Any = None
        self._rng: torch.Tensor | None = None

    def start(
        self,
        *,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any,
        hyperparameters: dict[str, Any],
        commitment: DatasetCommitment,
        nonce: bytes,
        entry: str,
        parts: Sequence[tuple[str, Path, Sequence[str]]],
        rank: int = 0,
        world_size: int = 1,
        layout: Any = None,
        key: Any = None,
    ) -> Recorder:
        """Open this rank's chip and enter its Recorder; `rank` and `world_size` are the
        framework's, which the configuration's ``distributed`` section (when set) must match."""
        opts, config = self.options, self.options.config
        config.distributed.place(rank, world_size, "the framework")
        chip = config.chip
        self.chip = open_chip(opts.out, opts.chips, rank, world_size, snapshots_per_day=chip.snapshots_per_day, secret_seed=chip.secret_seed)
        # The Recorder's own rank and world size: the framework's.
        recorder_config = dataclasses.replace(config, distributed=dataclasses.replace(config.distributed, rank=rank, world_size=world_size))
        try:
            with staged_program(entry, parts) as source:
                recorder = Recorder(
                    opts.out,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    hyperparameters=hyperparameters,
                    dataset=commitment,
                    nonce=nonce,
                    program=source,
                    chip=self.chip,
                    layout=layout,
                    key=key,
                    config=recorder_config,
                )
            recorder.__enter__()
        except BaseException:
            self._close_chip()
            raise
        self.recorder = recorder
        self.run_id = recorder.run_id
        self._rng = torch.get_rng_state()
        return recorder

    def pin_rng(self) -> None:
        if self._rng is not None:
            torch.set_rng_state(self._rng)

    def record(self, step: int, sample_ids: Sequence[int], loss: Any) -> list[Any]:
        if self.recorder is None:
            raise IntegrationError("a step ended before monitoring started")
        snaps = self.recorder.step(step, sample_ids, loss)
        self._rng = torch.get_rng_state()
        return snaps

    def finish(self, exc: BaseException | None = None) -> None:
        recorder, self.recorder = self.recorder, None
        try:
            if recorder is not None:
                recorder.__exit__(None if exc is None else type(exc), exc, None)
        finally:
            self._close_chip()

    def _close_chip(self) -> None:
        if self.chip is not None:
            self.chip.close()
            self.chip = None
