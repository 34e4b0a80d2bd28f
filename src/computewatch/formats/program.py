"""The training-program contract (docs/formats.md, "Training program"): how a run is replayed.

A precommitment names a training program: an entry point ``"<module>:<attribute>"`` plus the
files it lives in, bound by ``code_digest``. Called as ``entry(hyperparameters, data_dir)``
with the precommitted hyperparameters, the entry returns an object with the methods of
`TrainingProgram`: build the model from a generator seeded by the committed seed, the
optimizer and scheduler, rebuild a sample's bytes from its id, collate a batch and run one
training step. The Prover's trainer and the Verifier's replay both go through it, so a replay
runs exactly the code the precommitment bound.

Loading (`load_program`) reads every file of the program folder into memory, hashes them into
the code digest and refuses any mismatch *before importing anything*; it then writes those same
bytes to a fresh folder as a package of its own (``computewatch_program_<digest prefix>``) and
imports the entry module from there. Files import each other relatively (``from .model import
GPT``); anything else (torch, the environment's libraries) comes from the replaying machine,
whose versions the precommitment's ``environment`` records.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError, FormatError
from computewatch.crypto.digest import blake3_bytes

__all__ = [
    "ENVIRONMENT_FIELDS",
    "PROGRAM_DIR",
    "LoadedProgram",
    "ProgramError",
    "ProgramSource",
    "TrainingProgram",
    "code_digest_of",
    "current_environment",
    "deterministic_cpu",
    "environment_mismatch",
    "load_program",
    "parse_entry",
    "rank_order_mean",
    "read_program_files",
    "resolve_program",
    "wrap_ddp",
]

PROGRAM_DIR = "program"  # where a run directory keeps its training program's files
ENVIRONMENT_FIELDS = ("torch", "python", "machine", "cpu_capability", "threads", "deterministic")
# What must be equal for a bit-identical CPU replay (python only changes which stdlib the
# demo corpus reads, and the sample hashes catch that).
_EXACT_FIELDS = ("torch", "machine", "cpu_capability")
_ENTRY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*):([A-Za-z_][A-Za-z0-9_]*)")
_MAX_FILES = 10_000
_MAX_BYTES = 256 << 20


class ProgramError(ComputewatchError):
    """A training program cannot be loaded: files missing or altered, or a bad entry point."""


@runtime_checkable
class TrainingProgram(Protocol):
    """What ``entry(hyperparameters, data_dir)`` returns. ``batch_size`` is the global batch."""

    batch_size: int

    def build_model(self, generator: torch.Generator) -> torch.nn.Module: ...
    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer: ...
    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any | None: ...
    def sample(self, index: int) -> bytes: ...
    def collate(self, samples: Sequence[bytes]) -> Any: ...
    def train_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any | None, batch: Any) -> float: ...
    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor: ...


def parse_entry(entry: Any) -> tuple[str, str]:
    """``"module.sub:attr"`` -> (module, attribute); FormatError otherwise."""
    m = _ENTRY.fullmatch(entry) if isinstance(entry, str) else None
    if m is None:
        raise FormatError(f"program entry must look like 'module:attribute' (dotted module relative to the program folder), got {entry!r}")
    return m.group(1), m.group(2)


def code_digest_of(files: dict[str, bytes]) -> str:
    """BLAKE3-256 of canonical JSON ``{"v": 1, "files": {relative POSIX path: BLAKE3 hex}}``."""
    if not files:
        raise FormatError("a training program needs at least one file")
    table = {}
    for rel, data in files.items():
        _check_rel(rel)
        table[rel] = blake3_bytes(data).hex()
    return blake3_bytes(canonical_json({"v": 1, "files": table})).hex()


def _check_rel(rel: str) -> None:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"program file path {rel!r} must be relative, '/'-separated, without '.' or '..'")


@dataclass(frozen=True)
class ProgramSource:
    """A training program as the Prover holds it: an entry point and files under a root folder."""

    entry: str
    root: Path
    files: tuple[str, ...]  # relative POSIX paths under root

    @property
    def template(self) -> str | None:
        """The trusted template these files are (formats/templates.py), None for a custom program."""
        from computewatch.formats.templates import template_for

        found = template_for(self.entry, self.code_digest)
        return found.name if found is not None else None

    def __post_init__(self) -> None:
        parse_entry(self.entry)
        if not self.files:
            raise FormatError("a training program needs at least one file")
        for rel in self.files:
            _check_rel(rel)

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str], entry: str, pattern: str = "*.py") -> ProgramSource:
        """Every file under `root` matching `pattern` (recursively, no ``__pycache__``)."""
        base = Path(root).resolve()
        if not base.is_dir():
            raise FormatError(f"program folder {str(root)!r} does not exist")
        files = sorted(p.relative_to(base).as_posix() for p in base.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)
        return cls(entry, base, tuple(files))

    def read(self) -> dict[str, bytes]:
        out = {}
        for rel in self.files:
            try:
                out[rel] = (self.root / rel).read_bytes()
            except OSError as exc:
                raise FormatError(f"cannot read program file {str(self.root / rel)!r}: {exc.strerror}") from None
        return out

    @property
    def code_digest(self) -> str:
        return code_digest_of(self.read())


def read_program_files(folder: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every regular file under `folder`, by relative POSIX path (symbolic links are refused)."""
    base = Path(folder)
    if not base.is_dir():
        raise ProgramError(f"no training program folder at {str(base)!r}")
    out: dict[str, bytes] = {}
    total = 0
    for path in sorted(base.rglob("*")):
        if path.is_symlink():
            raise ProgramError(f"program file {str(path)!r} is a symbolic link; submit the file itself")
        if path.is_dir():
            continue
        if len(out) >= _MAX_FILES:
            raise ProgramError(f"training program at {str(base)!r} has more than {_MAX_FILES} files")
        data = path.read_bytes()
        total += len(data)
        if total > _MAX_BYTES:
            raise ProgramError(f"training program at {str(base)!r} is larger than {_MAX_BYTES >> 20} MiB")
        out[path.relative_to(base).as_posix()] = data
    if not out:
        raise ProgramError(f"training program folder {str(base)!r} is empty")
    return out


@dataclass
class LoadedProgram:
    """An imported training program; `make(hyperparameters, data_dir)` builds a `TrainingProgram`."""

    entry: str
    code_digest: str
    package: str
    factory: Any

    def make(self, hyperparameters: dict[str, Any], data_dir: str | os.PathLike[str] | None = None) -> TrainingProgram:
        program = self.factory(hyperparameters, None if data_dir is None else Path(data_dir))
        missing = [m for m in ("build_model", "build_optimizer", "build_scheduler", "sample", "collate", "train_step", "loss") if not callable(getattr(program, m, None))]
        batch = getattr(program, "batch_size", None)
        if missing or not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            what = f"lacks {', '.join(missing)}" if missing else f"has batch_size {batch!r}"
            raise ProgramError(f"training program {self.entry} does not follow the contract: the object it returns {what}")
        return program


def resolve_program(files: dict[str, bytes], entry: str, code_digest: str, template: str | None = None) -> dict[str, bytes]:
    """The files to execute: for a trusted template (named, or whose pinned digest and entry
    these are) the Verifier's own installed copy, never the Prover's; otherwise `files`."""
    from computewatch.formats.templates import get_template, template_for

    if template is not None:
        pinned = get_template(template)
        if pinned.entry != entry:
            raise ProgramError(f"template {template}: entry {entry!r} is not the template's {pinned.entry!r}")
        if pinned.code_digest != code_digest:
            # Not tampering: the run was recorded with another version of the template.
            raise ProgramError(f"template {template}: this Verifier pins version {pinned.code_digest[:16]} of it, the run was recorded with {code_digest[:16]}; verify with the computewatch release that recorded it")
        return pinned.files()
    found = template_for(entry, code_digest)
    return found.files() if found is not None else files


@contextmanager
def load_program(files: dict[str, bytes], entry: str, code_digest: str, template: str | None = None) -> Iterator[LoadedProgram]:
    """Check `files` against `code_digest`, then import `entry` from a private copy of them.
    A trusted template (`template`, or files that are one) is imported from the Verifier's own
    pinned copy instead (`resolve_program`).

    The copy and its modules are removed when the context ends.
    """
    module, attr = parse_entry(entry)
    files = resolve_program(files, entry, code_digest, template)
    actual = code_digest_of(files)
    if actual != code_digest:
        raise ProgramError(f"training program files hash to code digest {actual}, the precommitment binds {code_digest}")
    package = f"computewatch_program_{code_digest[:16]}"
    tmp = Path(tempfile.mkdtemp(prefix="computewatch-program-"))
    try:
        for rel, data in files.items():
            target = tmp / package / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        sys.path.insert(0, str(tmp))
        importlib.invalidate_caches()
        try:
            mod = importlib.import_module(f"{package}.{module}")
        except ImportError as exc:
            raise ProgramError(f"training program entry {entry}: cannot import {module!r} ({exc})") from None
        factory = getattr(mod, attr, None)
        if not callable(factory):
            raise ProgramError(f"training program entry {entry}: {module} has no callable {attr!r}")
        yield LoadedProgram(entry, code_digest, package, factory)
    finally:
        if str(tmp) in sys.path:
            sys.path.remove(str(tmp))
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]
        shutil.rmtree(tmp, ignore_errors=True)


def rank_order_mean(process_group, bucket):  # DDP refuses other annotations than its own
    """DDP communication hook: every rank's gradient bucket gathered, summed in rank order, divided
    by the world size. Each element's sum then has one fixed order whatever the bucket layout;
    a ring all-reduce sums an element in an order set by its position in the bucket, and DDP
    rebuilds its buckets after the first step it runs, so a replay that starts mid-run would not
    add in the trainer's order (bit-different from 3 ranks on)."""
    import torch.distributed as dist

    buf = bucket.buffer()
    world = dist.get_world_size(process_group)
    parts = [torch.empty_like(buf) for _ in range(world)]
    fut = dist.all_gather(parts, buf, group=process_group, async_op=True).get_future()

    def reduce(_: Any) -> torch.Tensor:
        total = parts[0].clone()
        for part in parts[1:]:
            total.add_(part)
        return total.div_(world)

    return fut.then(reduce)


def wrap_ddp(model: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel:
    """`DistributedDataParallel` with the contract's gradient reduction (`rank_order_mean`), as
    the trainer and the Verifier's replay both wrap a DDP model."""
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(None, rank_order_mean)
    return ddp


def deterministic_cpu(threads: int) -> None:
    """Fix torch's intra-op thread count and require deterministic algorithms (process-wide).

    Two runs from the same seed are bit-identical on the CPU only with the same torch version,
    the same thread count (reductions are split across threads, and float addition is not
    associative) and deterministic algorithms: trainer and replay both call this first.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    _deterministic_algorithms()


def _deterministic_algorithms() -> None:
    """`torch.use_deterministic_algorithms(True)` without importing the compiler stack.

    The public call imports `torch._inductor.config` (and with it dynamo, sympy and the rest of
    torch's compiler: 1.5 s or more of a fresh process) only to set inductor's `deterministic`
    flag. Here the kernels' flag is set directly, and inductor's the way inductor itself reads it:
    its module attribute if it is loaded already, else the variable it reads when it loads. The
    same two flags end up set, whichever code compiles later.
    """
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1"
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True  # type: ignore[attr-defined]


def current_environment() -> dict[str, Any]:
    """This process's replay environment, as a precommitment records it."""
    return {
        "torch": torch.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def environment_mismatch(recorded: dict[str, Any], here: dict[str, Any] | None = None) -> list[str]:
    """Why this machine cannot replay a recorded environment bit for bit (empty: it can)."""
    here = current_environment() if here is None else here
    out = [f"{k}: recorded {recorded.get(k)!r}, this machine {here.get(k)!r}" for k in _EXACT_FIELDS if recorded.get(k) != here.get(k)]
    if recorded.get("deterministic") is not True:
        out.append("the run did not enable torch's deterministic algorithms")
    return out
