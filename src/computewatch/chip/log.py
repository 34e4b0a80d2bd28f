"""The chip's append-only log: hash-chained, signed entries and RFC 9162 checkpoints.

File format: one entry per line, each line the canonical JSON of the entry, ended by "\n".
An append is one write of the whole line followed by fsync, so a crash can only leave a
trailing fragment without its newline (a torn tail). Opening the log cuts such a fragment off
(it was never acknowledged to anyone) and reports how many bytes went; every complete line
stays. Lines are the Merkle leaves; `prev` is SHA-256 of the previous line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from computewatch._faults import fault_point
from computewatch.chip.errors import ChipError
from computewatch.crypto.atomic import append_durable, fsync_dir
from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import FormatError
from computewatch.crypto.merkle import MerkleTree
from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import (
    ENTRY_VERSION,
    GENESIS_PREV,
    LogEntry,
    b64,
    entry_signing_input,
    split_log,
)

__all__ = ["ChipLog"]


class ChipLog:
    """The log file of one chip, as its firmware sees it (reads, appends, checkpoints)."""

    def __init__(self, path: Path, serial: str, entries: list[LogEntry], recovered_bytes: int) -> None:
        self.path = path
        self.serial = serial
        self._entries = entries
        self._tree = MerkleTree(e.line for e in entries)
        self.recovered_bytes = recovered_bytes

    @classmethod
    def open(cls, path: str | Path, serial: str) -> ChipLog:
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
        return cls(path, serial, entries, torn)

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
        self, kind: str, body: dict[str, Any], *, boot: int, clock_ns: int, busy_ns: int, key: SigningKey
    ) -> bytes:
        """The signed line the next append would write (without writing it)."""
        last = self.last
        entry: dict[str, Any] = {
            "v": ENTRY_VERSION,
            "serial": self.serial,
            "counter": len(self._entries),
            "boot": boot,
            "clock_ns": str(clock_ns),
            "busy_ns": str(busy_ns),
            "prev": last.hash.hex() if last else GENESIS_PREV,
            "kind": kind,
            "body": body,
        }
        entry["sig"] = b64(key.sign(entry_signing_input(entry)))
        return canonical_json(entry)

    def append(
        self, kind: str, body: dict[str, Any], *, boot: int, clock_ns: int, busy_ns: int, key: SigningKey
    ) -> LogEntry:
        """Sign, write and fsync one entry; returns it once it is durable."""
        line = self.build(kind, body, boot=boot, clock_ns=clock_ns, busy_ns=busy_ns, key=key)
        # Crash tests kill the chip here, mid-append (tests/test_chip_crash.py; computewatch._faults).
        fault_point("chip.log.append", path=self.path, counter=len(self._entries), line=line)
        append_durable(self.path, line + b"\n")
        entry = LogEntry.from_line(line)
        self._entries.append(entry)
        self._tree.append(line)
        return entry
