"""The chip's append-only log: hash-chained entries and signed RFC 9162 checkpoints.

File format: one entry per line, each line the canonical JSON of the entry, ended by "\n".
An append is one write of the whole line followed by fsync, so a crash can only leave a
trailing fragment without its newline (a torn tail). Opening the log cuts such a fragment off
(it was never acknowledged to anyone) and reports how many bytes went; every complete line
stays. Lines are the Merkle leaves; `prev` is SHA-256 of the previous line.

Version 2 (written from now on): the boot key signs checkpoints (and, under report-mode
firmware, every entry it reports); version 1 signs every entry. A log written in version 1 is
continued in version 2 from its next boot entry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from computewatch._faults import fault_point
from computewatch.chip.errors import ChipError
from computewatch.crypto.atomic import append_durable, fsync_dir
from computewatch.crypto.canonical import canonical_json, canonical_json_v2
from computewatch.crypto.errors import FormatError
from computewatch.crypto.merkle import MerkleTree
from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import (
    ENTRY_VERSION,
    ENTRY_VERSIONS,
    GENESIS_PREV,
    LogEntry,
    b64,
    entry_signing_input,
    split_log,
)

__all__ = ["ChipLog"]


class ChipLog:
    """The log file of one chip, as its firmware sees it (reads, appends, checkpoints)."""

    def __init__(
        self, path: Path, serial: str, entries: list[LogEntry], recovered_bytes: int, version: int = ENTRY_VERSION
    ) -> None:
        if version not in ENTRY_VERSIONS:
            raise ChipError(f"chip log version {version!r} is not one of {ENTRY_VERSIONS}")
        self.path = path
        self.serial = serial
        self.version = version  # the entry version this firmware writes (2; 1 for old-format tests)
        self._entries = entries
        self._tree = MerkleTree(e.line for e in entries)
        self.recovered_bytes = recovered_bytes

    @classmethod
    def open(cls, path: str | Path, serial: str, version: int = ENTRY_VERSION) -> ChipLog:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes() if path.exists() else b""
        lines, torn = split_log(data)
        entries: list[LogEntry] = []
        for i, line in enumerate(lines):
            try:
                entries.append(LogEntry.from_line(line))
            except FormatError as exc:
                # A complete line that does not parse is damage, not a crash: refuse, change nothing.
                raise ChipError(f"chip log {str(path)!r}: entry {i} is malformed ({exc}); refusing to append") from None
        if torn:
            # The torn fragment was never durable or acknowledged: drop it so appends continue cleanly.
            with open(path, "r+b") as fh:
                fh.truncate(len(data) - torn)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(path.parent)
        return cls(path, serial, entries, torn, version)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self._entries)

    def __getitem__(self, i: int) -> LogEntry:
        return self._entries[i]

    @property
    def last(self) -> LogEntry | None:
        return self._entries[-1] if self._entries else None

    def root(self, size: int | None = None) -> bytes:
        return self._tree.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self._tree.inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return self._tree.consistency_proof(old_size, new_size)

    def build(
        self,
        kind: str,
        body: dict[str, Any],
        *,
        boot: int,
        clock_ns: int,
        busy_ns: int,
        key: SigningKey,
        sign: bool = False,
    ) -> bytes:
        """The line the next append would write (without writing it). Version 2 signs it when it
        is a checkpoint or `sign` is set (report-mode firmware); version 1 signs every entry."""
        last = self.last
        entry: dict[str, Any] = {
            "v": self.version,
            "serial": self.serial,
            "counter": len(self._entries),
            "boot": boot,
            "clock_ns": str(clock_ns),
            "busy_ns": str(busy_ns),
            "prev": last.hash.hex() if last else GENESIS_PREV,
            "kind": kind,
            "body": body,
        }
        if self.version == 1:
            entry["sig"] = b64(key.sign(entry_signing_input(entry)))
            return canonical_json(entry)
        if sign or kind == "checkpoint":
            entry["sig"] = b64(key.sign(entry_signing_input(entry)))
        return canonical_json_v2(entry)

    def append(self, kind: str, body: dict[str, Any], **fields: Any) -> LogEntry:
        """Write and fsync the line `build(kind, body, **fields)` makes; returns the entry once
        it is durable."""
        line = self.build(kind, body, **fields)
        # Crash tests kill the chip here, mid-append (tests/test_chip_crash.py; computewatch._faults).
        fault_point("chip.log.append", path=self.path, counter=len(self._entries), line=line)
        append_durable(self.path, line + b"\n")
        entry = LogEntry.from_line(line)
        self._entries.append(entry)
        self._tree.append(line)
        return entry
