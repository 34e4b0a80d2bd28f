"""Snapshot records of a run directory (docs/formats.md, "Snapshot records") and copy-out files.

`snapshots/rank-<r>.jsonl` holds one canonical-JSON line per snapshot the rank's chip returned;
its `object` is the chip's copy-out (safetensors, tensors `region.00000`, ... in memory order),
which must hash to the shard digest the chip logged. A record with ``"v": 2`` is in canonical
JSON version 2 (RFC 8785), the version a Recorder writes for a run in version 2; a record
without ``"v"`` (version 1) is in the legacy encoding; each line must be exactly its version's
encoding.
"""

from __future__ import annotations

from typing import Any

import safetensors.torch
import torch

from computewatch.crypto.canonical import canonical_json_at, parse_canonical_json_tagged, version_of_v_field
from computewatch.crypto.hashing import hash_regions
from computewatch.crypto.regions import shard_digest
from computewatch.formats.storage import RunStorage, StoreError

__all__ = [
    "SNAPSHOTS_DIR",
    "SNAPSHOT_FIELDS",
    "encode_snapshot_record",
    "load_copy_out",
    "parse_snapshot_record",
    "read_snapshot_records",
    "snapshot_file",
]

SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_FIELDS = frozenset({"rank", "chip_id", "counter", "step", "clock_ns", "shard_digest", "regions", "object", "stall_s"})


_V2 = 2


def _canonical_of(obj: Any) -> int:
    """The canonical JSON version of a record: 2 for "v": 2, 1 for a record without "v"."""
    return version_of_v_field(obj, _V2, "snapshot record")


def encode_snapshot_record(record: dict[str, Any]) -> bytes:
    """One line of a snapshot file: the record in the canonical JSON its version names, and a newline."""
    return canonical_json_at(_canonical_of(record), record) + b"\n"


def parse_snapshot_record(obj: Any, rank: int) -> dict[str, Any]:
    """A snapshot record's fields and types (ValueError naming the problem otherwise)."""
    if not isinstance(obj, dict) or set(obj) - {"v"} != SNAPSHOT_FIELDS:
        raise ValueError(f"a snapshot record has exactly the fields {sorted(SNAPSHOT_FIELDS)} (and \"v\": 2 in v2)")
    if obj["rank"] != rank:
        raise ValueError(f"record of rank {obj['rank']!r} in the file of rank {rank}")
    for name in ("counter", "step"):
        if not isinstance(obj[name], int) or isinstance(obj[name], bool) or obj[name] < 0:
            raise ValueError(f"{name} must be a non-negative integer")
    if not isinstance(obj["clock_ns"], str) or not obj["clock_ns"] or not set(obj["clock_ns"]) <= set("0123456789"):
        raise ValueError("clock_ns must be a decimal string")
    for name in ("shard_digest", "object"):
        if not isinstance(obj[name], str) or len(obj[name]) != 64 or not set(obj[name]) <= set("0123456789abcdef"):
            raise ValueError(f"{name} must be 64 lowercase hex characters")
    if not (obj["chip_id"] is None or isinstance(obj["chip_id"], str)) or not isinstance(obj["regions"], list):
        raise ValueError("chip_id must be a string or null and regions a list")
    return obj


def snapshot_file(rank: int) -> str:
    return f"{SNAPSHOTS_DIR}/rank-{rank:05d}.jsonl"


def read_snapshot_records(storage: RunStorage, rank: int) -> list[dict[str, Any]]:
    """Rank `rank`'s snapshot records (none if the file is absent); StoreError names a bad line."""
    rel = snapshot_file(rank)
    if not storage.exists(rel):
        return []
    data = storage.read(rel)
    if data and not data.endswith(b"\n"):
        raise StoreError(f"{storage.path(rel)} is truncated (no final newline)")
    out = []
    for lineno, line in enumerate(data.splitlines(), 1):
        try:
            obj, _ = parse_canonical_json_tagged(line, _canonical_of)  # exactly its version's encoding
            out.append(parse_snapshot_record(obj, rank))
        except ValueError as exc:  # FormatError is a ValueError too
            raise StoreError(f"{storage.path(rel)} line {lineno} is malformed: {exc}") from None
    return out


def load_copy_out(data: bytes, entry: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors of a copy-out file, after checking they hash to `entry["shard_digest"]`."""
    what = f"snapshot object {entry.get('object')}"
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # the library's own error types on malformed files
        raise StoreError(f"{what} is not a safetensors file ({exc})") from None
    names = [f"region.{i:05d}" for i in range(len(tensors))]
    if sorted(tensors) != sorted(names):
        raise StoreError(f"{what} does not hold tensors region.00000 .. region.{len(tensors) - 1:05d}")
    ordered = [tensors[name] for name in names]
    actual = shard_digest(hash_regions(ordered)).hex()
    if actual != entry["shard_digest"]:
        raise StoreError(
            f"snapshot {entry.get('chip_id')}#{entry.get('counter')} (step {entry.get('step')}): copy-out hashes to "
            f"{actual}, the chip logged {entry['shard_digest']}"
        )
    return ordered
