"""The typed channel between the judge (the Verifier's process) and the executor (the sandboxed
process that runs the Prover's training program), and the typed outcome of every check.

Every message is one line of JSON on a dedicated pipe, at most `MAX_MESSAGE` bytes, with exactly
the fields of its dataclass, each of the declared type; anything else is `ProtocolError`. Jobs go
judge -> executor on the executor's stdin; replies come back on a pipe of their own. The executor's
stdout and stderr (where the program's own prints go) are never read for meaning.

A reply is a claim: the judge decides every check from the tensors the executor wrote into its
scratch folder (re-hashed and compared outside the sandbox), never from what a reply says about
them. Losses, learning rates and RNG digests in a reply are compared with the Prover's records by
the judge; a FLOP count in a reply is the program's own claim and only ever raises the total
(docs/verifier.md, "Compute").
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, get_type_hints

__all__ = [
    "MAX_MESSAGE",
    "CheckOutcome",
    "Hello",
    "LossesJob",
    "LossesReply",
    "ProgramJob",
    "ProgramReply",
    "ProtocolError",
    "Ready",
    "ReplayJob",
    "ReplayReply",
    "SamplesJob",
    "SamplesReply",
    "Status",
    "decode",
    "encode",
]

MAX_MESSAGE = 16 << 20


class ProtocolError(ValueError):
    """A message that is not one of the protocol's types, exactly."""


class Status(enum.StrEnum):
    """A check's outcome. Only `failed` makes a violation; `undecided` on a decisive check makes
    a verdict inconclusive; `not-run` is neutral (nothing to check, or not asked for)."""

    PASSED = "passed"
    FAILED = "failed"
    UNDECIDED = "undecided"
    NOT_RUN = "not-run"

    @property
    def passed(self) -> bool | None:
        """The verdict document's `passed` field: true, false, or null (undecided or not run)."""
        return {Status.PASSED: True, Status.FAILED: False}.get(self)


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "passed": self.status.passed, "detail": self.detail}


# ------------------------------------------------------------------ judge -> executor
@dataclass(frozen=True)
class Hello:
    """Sent once: what the executor may know about the run (nothing the judge compares with)."""

    kind: str
    entry: str
    code_digest: str
    hyperparameters: dict[str, Any]
    seed: str  # the run's committed seed (hex): W0 comes from it; never the Verifier's secret
    world_size: int
    strategy: str
    threads: int
    data_dir: str | None
    template: str | None = None  # a trusted template's name: the executor runs the Verifier's pinned copy


@dataclass(frozen=True)
class ProgramJob:
    """W0 (the model the program builds from the committed seed), the learning rate of steps
    0..steps-1 and the optimizer and scheduler settings at `settings_at` (each a step count)."""

    kind: str
    job: int
    steps: int
    settings_at: list[int]


@dataclass(frozen=True)
class SamplesJob:
    """The bytes the program rebuilds for each sample id."""

    kind: str
    job: int
    ids: list[int]


@dataclass(frozen=True)
class ReplayJob:
    """From the state at step `start` (each rank's staged checkpoint, or W0 from the seed when
    `start_files` is empty), run one training step per entry of `batches` (global sample ids;
    the bytes are in the staged `samples` file, `lengths` long each, in the order of `sample_ids`),
    and write each rank's parameters after every step in `keep`, and its full state after the
    last step when `final` is true."""

    kind: str
    job: int
    start: int
    start_files: list[str]  # per rank, relative to the staged inputs folder
    batches: list[list[int]]
    samples: str
    sample_ids: list[int]
    lengths: list[int]
    keep: list[int]
    final: bool
    threads: int
    lr_scale: float
    count_flops: bool
    trace: bool = False  # hash every operator's outputs of the last step (step bisection, issue 19)


@dataclass(frozen=True)
class LossesJob:
    """Per-sample losses of the full model with the staged weights (one file per weight set)."""

    kind: str
    job: int
    weights: list[str]
    samples: str
    sample_ids: list[int]
    lengths: list[int]


# ------------------------------------------------------------------ executor -> judge
@dataclass(frozen=True)
class Ready:
    kind: str
    batch_size: int


@dataclass(frozen=True)
class ProgramReply:
    kind: str
    job: int
    w0: str  # file in scratch
    lr: list[float]
    settings: list[dict[str, Any]]  # per settings_at step: {"param_groups": [...], "scheduler": ...}


@dataclass(frozen=True)
class SamplesReply:
    kind: str
    job: int
    file: str
    lengths: list[int]


@dataclass(frozen=True)
class ReplayReply:
    kind: str
    job: int
    losses: list[float | None]
    lr: list[float]
    rng: list[str]
    files: list[list[str]]  # per rank: file names in scratch (params after kept steps, then final)
    flops: dict[str, Any] | None  # the program's own count: a claim
    ops: list[list[str]] | None = None  # with `trace`: [operator, BLAKE3 of its outputs] of the last step, in dispatch order (a claim)


@dataclass(frozen=True)
class LossesReply:
    kind: str
    job: int
    losses: list[list[float | None]]  # per weight set, per sample


_TYPES: dict[str, type] = {
    "hello": Hello, "program": ProgramJob, "samples": SamplesJob, "replay": ReplayJob, "losses": LossesJob,
    "ready": Ready, "program-reply": ProgramReply, "samples-reply": SamplesReply, "replay-reply": ReplayReply,
    "losses-reply": LossesReply,
}
_KIND = {cls: kind for kind, cls in _TYPES.items()}


def encode(message: Any) -> bytes:
    """One line of JSON (non-finite floats as null)."""
    if type(message) not in _KIND:
        raise ProtocolError(f"{type(message).__name__} is not a protocol message")
    body = asdict(message)
    if body["kind"] != _KIND[type(message)]:
        raise ProtocolError(f"a {type(message).__name__} must have kind {_KIND[type(message)]!r}")
    return json.dumps(_finite(body), separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def decode(line: bytes, *expected: type) -> Any:
    """The message in `line`, which must be one of the `expected` types, exactly typed."""
    if len(line) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(line)} bytes is over the limit")
    try:
        body = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("message is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        raise ProtocolError("message is not an object with a kind")
    cls = _TYPES.get(body["kind"])
    if cls is None or cls not in expected:
        raise ProtocolError("message of an unexpected kind")
    names = {f.name for f in fields(cls)}
    if set(body) != names:
        raise ProtocolError(f"{body['kind']} message has other fields than {sorted(names)}")
    hints = get_type_hints(cls)
    for name in names:
        if not _conforms(body[name], hints[name]):
            raise ProtocolError(f"{body['kind']} message: field {name} is not a {hints[name]}")
    return cls(**body)


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _conforms(v, args[1]) for k, v in value.items())
    return False
