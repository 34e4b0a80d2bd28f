
"""Per-step records: the ordered batch sequence 𝔻 and what each optimizer step saw.

Step ``t`` (0-based) is the optimizer step that consumed batch ``t`` and turned weights W_t into
W_{t+1}. Its record, one canonical-JSON line::

    {"step": t, "sample_ids": [...], "batch_root": hex, "lr": float, "loss": float | null,
     "rng": hex}

``batch_root`` is the RFC 9162 Merkle root over the batch's per-sample hashes in batch order
(so it commits to the sequence of sample hashes, Appendix D step 2); ``lr`` the learning rate
the step used; ``loss`` rank 0's training loss (null if not finite); ``rng`` the BLAKE3-256 of
torch's CPU RNG state just before the step. Version 2 records add ``"state": [commitment per
rank]``, each rank's state after the step (`computewatch.formats.commitments`); version 1
records (no ``state``) stay readable. Version 3 records (what a Recorder writes now) are either
field set plus ``"v": 3`` and are encoded in canonical JSON version 2 (RFC 8785), on their line
and as their leaf of the records root; versions 1 and 2 (no ``v``) are the legacy encoding. A line
must be exactly its version's encoding of the record it holds.

Records live in segment files ``steps/<first step>-<last step>.jsonl`` (10-digit numbers), each
written atomically once complete (at each checkpoint and at the end of the run): a crash loses
only the steps after the last checkpoint, which a resumed run redoes anyway.
"""

from __future__ import annotations

import math
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json_at, parse_canonical_json_tagged, version_of_v_field
from computewatch.crypto.errors import FormatError
from computewatch.crypto.merkle import root_from_leaves
from computewatch.formats.commitments import StateCommitment
from computewatch.formats.storage import RunStorage, StoreError

__all__ = ["STEPS_DIR", "StepLog", "StepRecord", "batch_root", "records_root"]

STEPS_DIR = "steps"
_FIELDS = frozenset({"step", "sample_ids", "batch_root", "lr", "loss", "rng"})
_FIELDS_V2 = _FIELDS | {"state"}
_V3 = 3  # the record version that is RFC 8785 (canonical JSON version 2)
_HEX = frozenset("0123456789abcdef")


def batch_root(sample_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 root over the batch's per-sample hashes (leaves in batch order)."""
    if not sample_hashes:
        raise FormatError("a batch needs at least one sample")
    return root_from_leaves(list(sample_hashes))


def records_root(records: Sequence[StepRecord]) -> bytes | None:
    """RFC 9162 root whose leaf t is step record t's canonical JSON (null without records)."""
    return root_from_leaves([r.leaf() for r in records]) if records else None


@dataclass(frozen=True)
class StepRecord:
    step: int
    sample_ids: tuple[int, ...]
    batch_root: str
    lr: float
    loss: float | None
    rng: str
    state: tuple[StateCommitment, ...] | None = None  # v2: per-rank commitment of the state after the step
    canonical: int = 2  # canonical JSON version: 2 writes a v3 record (RFC 8785), 1 a legacy v1/v2 record

    def to_json(self) -> dict[str, Any]:
        loss = self.loss if self.loss is not None and math.isfinite(self.loss) else None
        out: dict[str, Any] = {
            "step": self.step,
            "sample_ids": list(self.sample_ids),
            "batch_root": self.batch_root,
            "lr": self.lr,
            "loss": loss,
            "rng": self.rng,
        }
        if self.state is not None:
            out["state"] = [c.to_json() for c in self.state]
        if self.canonical == 2:
            out["v"] = _V3
        return out

    def leaf(self) -> bytes:
        """The record's canonical JSON (its version's): its leaf of the records root."""
        return canonical_json_at(self.canonical, self.to_json())

    def encode(self) -> bytes:
        return self.leaf() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> StepRecord:
        """Parse one line, which must be exactly its version's canonical encoding."""
        obj, _ = parse_canonical_json_tagged(line, _canonical_of)
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: Any) -> StepRecord:
        canonical = _canonical_of(obj)
        fields = set(obj) - {"v"} if isinstance(obj, dict) else None
        if fields not in (_FIELDS, _FIELDS_V2):
            raise FormatError(f"step record must have exactly the fields {sorted(_FIELDS)} (v1) or those and 'state' (v2), "
                              "and 'v': 3 (v3)")
        ids = obj["sample_ids"]
        if not _count(obj["step"]) or not isinstance(ids, list) or not ids or not all(_count(i) for i in ids):
            raise FormatError("step record: step and sample_ids must be non-negative integers (at least one sample)")
        for name in ("batch_root", "rng"):
            if not isinstance(obj[name], str) or len(obj[name]) != 64 or not set(obj[name]) <= _HEX:
                raise FormatError(f"step record {obj['step']}: {name} must be 64 lowercase hex characters")
        if not _number(obj["lr"]) or not (obj["loss"] is None or _number(obj["loss"])):
            raise FormatError(f"step record {obj['step']}: lr and loss must be numbers")
        state = None
        if "state" in obj:
            items = obj["state"]
            if not isinstance(items, list) or not items:
                raise FormatError(f"step record {obj['step']}: state must be a non-empty list of per-rank commitments")
            state = tuple(StateCommitment.from_json(c, f"step record {obj['step']} state") for c in items)
            if [c.rank for c in state] != list(range(len(state))):
                raise FormatError(f"step record {obj['step']}: state must list ranks 0..W-1 in order")
        # Under RFC 8785 an integral float is written as an integer (0.0 as 0): read lr as a float.
        return cls(obj["step"], tuple(ids), obj["batch_root"], float(obj["lr"]), obj["loss"], obj["rng"], state, canonical)


def _canonical_of(obj: Any) -> int:
    """The canonical JSON version of a record: 2 for a v3 record, 1 for v1/v2 (no "v")."""
    return version_of_v_field(obj, _V3, "step record")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _segment_name(first: int, last: int) -> str:
    return f"{first:010d}-{last:010d}.jsonl"


def _parse_segment_name(name: str) -> tuple[int, int]:
    stem = name.removesuffix(".jsonl")
    parts = stem.split("-")
    if len(parts) != 2 or not name.endswith(".jsonl") or not all(p.isdigit() for p in parts):
        raise StoreError(f"unexpected file in {STEPS_DIR}/: {name!r}")
    return int(parts[0]), int(parts[1])


class StepLog:
    """Reads and writes a run's step-record segments."""

    def __init__(self, storage: RunStorage) -> None:
        self.storage = storage

    def segments(self) -> list[tuple[int, int, str]]:
        out = [(*_parse_segment_name(n), n) for n in self.storage.listdir(STEPS_DIR)]
        return sorted(out)

    def write_segment(self, records: Sequence[StepRecord]) -> None:
        """Write consecutive records as one segment, atomically."""
        if not records:
            return
        for a, b in itertools.pairwise(records):
            if b.step != a.step + 1:
                raise FormatError(f"step records must be consecutive: {a.step} then {b.step}")
        data = b"".join(r.encode() for r in records)
        self.storage.write_atomic(f"{STEPS_DIR}/{_segment_name(records[0].step, records[-1].step)}", data)

    def read(self) -> Iterator[StepRecord]:
        """Every record, in order; a gap, overlap or malformed line raises a StoreError naming it."""
        expected = 0
        for first, last, name in self.segments():
            if first != expected:
                raise StoreError(f"step records: {STEPS_DIR}/{name} starts at step {first}, expected {expected}")
            data = self.storage.read(f"{STEPS_DIR}/{name}")
            lines = data.split(b"\n")
            if lines[-1] != b"":
                raise StoreError(f"step records: {STEPS_DIR}/{name} is truncated (no final newline)")
            for lineno, line in enumerate(lines[:-1], 1):
                try:
                    record = StepRecord.decode(line)
                except (ValueError, FormatError) as exc:
                    raise StoreError(f"step records: {STEPS_DIR}/{name} line {lineno} is malformed: {exc}") from None
                if record.step != expected:
                    raise StoreError(f"step records: {STEPS_DIR}/{name} line {lineno} is step {record.step}, expected {expected}")
                expected += 1
                yield record
            if expected != last + 1:
                raise StoreError(f"step records: {STEPS_DIR}/{name} ends at step {expected - 1}, its name says {last}")

    def count(self) -> int:
        """Steps covered by segments that run on from step 0 without a gap (from the names alone)."""
        expected = 0
        for first, last, _ in self.segments():
            if first != expected or last < first:
                break
            expected = last + 1
        return expected

    def truncate(self, n_steps: int) -> None:
        """Keep only steps 0..n_steps-1 (after a crash, steps beyond the resumed checkpoint are redone)."""
        for first, last, name in self.segments():
            if first >= n_steps:
                self.storage.remove(f"{STEPS_DIR}/{name}")
            elif last >= n_steps:
                kept = [r for r in _records_in(self.storage, name) if r.step < n_steps]
                self.write_segment(kept)
                self.storage.remove(f"{STEPS_DIR}/{name}")


def _records_in(storage: RunStorage, name: str) -> list[StepRecord]:
    data = storage.read(f"{STEPS_DIR}/{name}")
    try:
        return [StepRecord.decode(line) for line in data.split(b"\n") if line]
    except (ValueError, FormatError) as exc:
        raise StoreError(f"step records: {STEPS_DIR}/{name} is malformed: {exc}") from None
