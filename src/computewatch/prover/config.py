"""`RunConfig`: how a run is recorded, declared once for every entry point.

    from computewatch import RunConfig, ChipConfig, CheckpointConfig

    config = RunConfig(threads=1, checkpoint=CheckpointConfig(every=50),
                       chip=ChipConfig(dir="chips/"))
    run = computewatch.monitor(Program, hp, out="runs/gpt", config=config)

The same object configures the `Recorder`, `computewatch.monitor` / `Monitor`, the integrations'
`RunRecording`, the Hugging Face `MonitoredTrainer` and the Lightning `ComputewatchCallback`.
It is frozen and picklable (Lightning's spawned ranks get a copy), validated when built (an
impossible value fails naming its dotted field, e.g. ``checkpoint.every``), and loads from a
dict or a TOML file (`RunConfig.from_dict`, `RunConfig.from_toml`), whose tables are the
sections:

    threads = 1
    [chip]
    dir = "chips/"
    seconds_per_step = "measured"      # None in Python: the measured wall time of each step
    [checkpoint]
    every = 50
    [distributed]
    strategy = "fsdp"

Byte values (``nonce``, ``chip.secret_seed``) are hex strings in a dict or TOML. What a run is
recorded *from* (model, optimizer, data, the chip objects, the Prover key) and *where* (the
run folder) stay arguments of the entry points; everything about *how* is here.

The flat keyword arguments the entry points took before (``checkpoint_every=``, ``chips=``,
...) still work for one version through `resolve_config`, with a DeprecationWarning naming the
field each one became (`LEGACY_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computewatch.crypto.errors import FormatError

__all__ = [
    "DEMO_CHIP_SECONDS_PER_STEP",
    "DEMO_SNAPSHOTS_PER_DAY",
    "LEGACY_FIELDS",
    "STRATEGIES",
    "CheckpointConfig",
    "ChipConfig",
    "ConfigError",
    "DistributedConfig",
    "RunConfig",
    "resolve_config",
]

DEMO_SNAPSHOTS_PER_DAY = 24.0
DEMO_CHIP_SECONDS_PER_STEP = 60.0
STRATEGIES = ("ddp", "fsdp")
# The most busy time one step may report: computewatch.chip.chip.MAX_STEP_BUSY_S (a day). Not
# imported from there, which would load torch for reading a configuration (a test ties the two).
MAX_STEP_BUSY_S = 86_400.0
_MEASURED = "measured"  # the dict/TOML spelling of chip.seconds_per_step = None


class ConfigError(FormatError):
    """A run configuration with an impossible or unknown value; the message names the field."""


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass's own field in __post_init__


@dataclass(frozen=True)
class ChipConfig:
    """The chips of a run: one per process (rank r takes the r-th), each logging snapshots."""

    enabled: bool = True
    """False: record without chips (a transcript only; nothing for a Verifier to inspect)."""
    dir: Path | None = None
    """A folder of chip state folders (a chip folder holds ``sealed/``), taken in name order; unset:
    chips provisioned under ``<out>/chips`` by the integrations (rank 0 provisions)."""
    snapshots_per_day: float = DEMO_SNAPSHOTS_PER_DAY
    """The snapshot trigger rate (per day of busy time) of chips provisioned for the run."""
    seconds_per_step: float | None = DEMO_CHIP_SECONDS_PER_STEP
    """The busy time each step reports to the chip's meter (the demo's simulated 60 s); None: the
    measured wall time of the step, which real monitoring uses."""
    secret_seed: bytes | None = None
    """Derive provisioned chips' device secrets from this seed so their snapshot schedules repeat
    (tests, demos). Never for real monitoring: it makes snapshots predictable."""
    copyout_dir: Path | None = None
    """Where the chips copy their snapshot shards out (default: ``<out>/chip-copyout/rank-R``)."""
    ids: tuple[str | None, ...] | None = None
    """The chip id of every rank, when known up front (default: gathered from the chips)."""

    def __post_init__(self) -> None:
        _flag("chip.enabled", self.enabled)
        for name in ("dir", "copyout_dir"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, Path)) or not str(value):
                    raise ConfigError(f"chip.{name} must be a folder path, got {value!r}")
                _set(self, name, Path(value))
        rate = self.snapshots_per_day
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"chip.snapshots_per_day must be a positive number, got {rate!r}")
        busy = self.seconds_per_step
        if busy is not None and (isinstance(busy, bool) or not isinstance(busy, (int, float)) or not 0 <= busy <= MAX_STEP_BUSY_S):
            raise ConfigError(f"chip.seconds_per_step must be 0 to {MAX_STEP_BUSY_S:g} (a day) or unset (measured), got {busy!r}")
        if self.secret_seed is not None and not isinstance(self.secret_seed, bytes):
            raise ConfigError(f"chip.secret_seed must be bytes, got {type(self.secret_seed).__name__}")
        if self.ids is not None:
            if isinstance(self.ids, (str, bytes)) or not isinstance(self.ids, Sequence) or any(i is not None and not isinstance(i, str) for i in self.ids):
                raise ConfigError(f"chip.ids must be a list of chip ids (strings), got {self.ids!r}")
            _set(self, "ids", tuple(self.ids))
        if not self.enabled and self.dir is not None:
            raise ConfigError("chip.dir is set but chip.enabled is false: choose one")


@dataclass(frozen=True)
class CheckpointConfig:
    """The checkpoints the Prover keeps (the states a Verifier replays segments from)."""

    every: int = 100
    """Checkpoint every this many optimizer steps (W0 is always checkpointed)."""
    step_commitments: bool = True
    """Commit every step's weight and optimizer-state digests and update norm (step records v2)."""

    def __post_init__(self) -> None:
        _positive_int("checkpoint.every", self.every)
        _flag("checkpoint.step_commitments", self.step_commitments)


@dataclass(frozen=True)
class DistributedConfig:
    """The run's processes: one chip each."""

    strategy: str = "ddp"
    """How `monitor` wraps the model under torch.distributed: "ddp" (replicas) or "fsdp" (shards)."""
    world_size: int | None = None
    """The number of processes; unset: torch.distributed's (1 without it). A framework's own
    count (Lightning's devices) must agree."""
    rank: int | None = None
    """This process's rank; unset: torch.distributed's (0 without it)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"distributed.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.world_size is not None:
            _positive_int("distributed.world_size", self.world_size)
        if self.rank is not None:
            if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
                raise ConfigError(f"distributed.rank must be a whole number >= 0, got {self.rank!r}")
            if self.world_size is not None and self.rank >= self.world_size:
                raise ConfigError(f"distributed.rank {self.rank} outside distributed.world_size {self.world_size}")

    def place(self, rank: int, world_size: int, where: str = "this process") -> tuple[int, int]:
        """(rank, world size) for `where`, whose own values are given: the configured ones must agree."""
        for name, want, have in (("rank", self.rank, rank), ("world_size", self.world_size, world_size)):
            if want is not None and want != have:
                raise ConfigError(f"distributed.{name} is {want}, but {where} has {name} {have}")
        return rank, world_size


_SECTIONS: dict[str, type] = {"chip": ChipConfig, "checkpoint": CheckpointConfig, "distributed": DistributedConfig}


@dataclass(frozen=True)
class RunConfig:
    """How a run is recorded: run-level fields and the chip, checkpoint and distributed sections."""

    run_id: str | None = None
    """The run's id (every rank logs rank 0's); unset: a fresh one, or the resumed run's."""
    nonce: bytes | None = None
    """The run's nonce (so the seed): unset, a fresh one (rank 0's under torch.distributed).
    Fixing it lets a test reproduce a run; a Prover that picks it can grind the seed."""
    resume: bool = False
    """Continue the run already in the output folder from its latest complete checkpoint."""
    threads: int | None = None
    """The intra-op thread count the run is recorded and replayed with; unset: the current one."""
    chip: ChipConfig = field(default_factory=ChipConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        if self.run_id is not None and (not isinstance(self.run_id, str) or not self.run_id):
            raise ConfigError(f"run_id must be a non-empty string, got {self.run_id!r}")
        if self.nonce is not None and (not isinstance(self.nonce, bytes) or not self.nonce):
            raise ConfigError(f"nonce must be non-empty bytes, got {self.nonce!r}")
        _flag("resume", self.resume)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    # ---- dict / TOML -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The configuration a dict (a parsed TOML file, JSON) describes; a missing key keeps its
        default, an unknown key or a bad value fails naming its dotted name."""
        return _build(cls, data, "")

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        """The configuration of a TOML file (top-level keys and ``[chip]``, ``[checkpoint]``,
        ``[distributed]`` tables)."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the run configuration: {exc.strerror}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The dict `from_dict` reads back (JSON-able; bytes as hex, paths as strings; TOML-able
        once the None values are dropped)."""
        return _plain(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with dotted fields changed: ``config.replace(**{"checkpoint.every": 5})``."""
        return _with(self, changes)


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _plain(value)
        elif isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the run configuration"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table (dict), got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown run configuration key {prefix + str(key)!r}")
        if key in _SECTIONS and cls is RunConfig:
            kwargs[key] = _build(_SECTIONS[key], value, f"{key}.")
            continue
        if key in ("nonce", "secret_seed") and value is not None:
            if not isinstance(value, str):
                raise ConfigError(f"{prefix}{key} must be a hex string, got {value!r}")
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ConfigError(f"{prefix}{key} must be a hex string, got {value!r}") from None
        if cls is ChipConfig and key == "seconds_per_step" and value == _MEASURED:
            value = None
        kwargs[key] = value
    return cls(**kwargs)


def _with(config: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for dotted, value in changes.items():
        section, _, name = dotted.rpartition(".")
        if (section and section not in _SECTIONS) or name not in {f.name for f in dataclasses.fields(_SECTIONS[section] if section else RunConfig)}:
            raise ConfigError(f"unknown run configuration field {dotted!r}")
        (sections.setdefault(section, {}) if section else top)[name] = value
    for section, values in sections.items():
        top[section] = dataclasses.replace(getattr(config, section), **values)
    return dataclasses.replace(config, **top)


# ---- the flat keyword arguments of before (one version of compatibility) -----------------------------
LEGACY_FIELDS: dict[str, str] = {
    "checkpoint_every": "checkpoint.every",
    "step_commitments": "checkpoint.step_commitments",
    "chips": "chip.dir",  # False: chip.enabled = false; None/True: chips provisioned under <out>/chips
    "snapshots_per_day": "chip.snapshots_per_day",
    "chip_seconds_per_step": "chip.seconds_per_step",
    "chip_secret_seed": "chip.secret_seed",
    "copyout_dir": "chip.copyout_dir",
    "chip_ids": "chip.ids",
    "strategy": "distributed.strategy",
    "rank": "distributed.rank",
    "world_size": "distributed.world_size",
    "threads": "threads",
    "nonce": "nonce",
    "run_id": "run_id",
    "resume": "resume",
}


def resolve_config(
    owner: str,
    config: RunConfig | None,
    options: Mapping[str, Any],
    accepted: Collection[str],
    defaults: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The configuration an entry point (`owner`) runs with: `config`, or one built from the flat
    keyword `options` it took before (deprecated; `accepted` names those it took), over
    `defaults` (legacy names: the entry point's old defaults where they differ from RunConfig's)."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{owner}() got an unexpected keyword argument {unknown[0]!r}")
    if config is not None:
        if not isinstance(config, RunConfig):
            raise ConfigError(f"{owner}: config must be a RunConfig, got {type(config).__name__}")
        if options:
            raise TypeError(f"{owner}(): pass config= or the deprecated {', '.join(sorted(options))}=, not both")
        return config
    if options:
        renamed = ", ".join(f"{k} -> {LEGACY_FIELDS[k]}" for k in sorted(options))
        warnings.warn(f"{owner}(): keyword run options are deprecated, pass config=RunConfig(...) ({renamed})", DeprecationWarning, stacklevel=3)
    merged = {**(defaults or {}), **options}
    changes: dict[str, Any] = {}
    for name, value in merged.items():
        if name == "chips":
            if value is False:
                changes["chip.enabled"] = False
            elif value is not None and value is not True:
                changes["chip.dir"] = value
        else:
            changes[LEGACY_FIELDS[name]] = value
    return RunConfig().replace(**changes)
