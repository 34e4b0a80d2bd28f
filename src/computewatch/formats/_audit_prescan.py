"""A chip log read ahead on every core before its audit (issue 24), and the schedule redrawn in C.

`audit_log` checks entries in log order, but most of its work per line needs the line alone:
the two SHA-256 of a log v2 entry (its chain hash, the next entry's `prev`, and its RFC 9162
leaf hash), the strict shape and BLAKE3 shard digest of an ordinary snapshot entry, and the
Merkle tree's internal nodes. `Prescan` has the native module (computewatch._native) do all of
that first, in `threads` threads that run without the GIL, so it runs on both cores; the
verifier then reads the results in order and decides only what depends on its state (chain,
counter, epoch, triggers, layout). Nothing here decides that an entry is bad: a line the
prescan could not read (not a snapshot, or not of the strict shape) is checked by the Python
verifier as before, and reports are the same with and without it (tests/test_chip_audit_native.py).

`arrivals` is formats.schedule.arrivals computed by the native module: the same draws, the
same platform logarithm (Python's math.log is the C library's log), the same window test, the
C library's logl where it settles ln(u) correctly rounded, and schedule.gap_ns for the draws
neither can settle (tests compare both).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from computewatch import _native
from computewatch.crypto.merkle import MerkleTree
from computewatch.formats import schedule

__all__ = ["CHUNK_LOG", "PrescannedTree", "arrivals", "audit_threads", "prescan"]

_I64 = 1 << 63
# Lines per task (2**CHUNK_LOG): threads take chunks in turn; each hashes the Merkle subtrees
# inside its chunks (tests set it small, so that a small log spans many chunks).
CHUNK_LOG = 9


def audit_threads() -> int:
    """Background threads for the prescan: one per core beside the verifier's (which reads
    ahead too whenever it waits for a line), at least 1, at most 3."""
    return max(1, min((os.cpu_count() or 1) - 1, 3))


def prescan(lines: Sequence[bytes], threads: int | None = None) -> Any | None:
    """The native `Prescan` of `lines`, a list of bytes or a native LogLines (read in place, in
    the log's own buffer); None where the native module is off or missing."""
    native = _native.chiplog()
    if native is None or not lines:
        return None
    return native.prescan(lines, audit_threads() if threads is None else threads, CHUNK_LOG)


class _PrescannedLeaves:
    """A PrescannedTree's leaf hashes, as the list MerkleTree keeps: those appended one by one are
    kept (a dict by index); those of lines the native scan took from the prescan are counted
    only, and read from the prescan (bytes made) when asked: no object per leaf for them."""

    __slots__ = ("_own", "_pre", "_size")

    def __init__(self, pre: Any) -> None:
        self._pre = pre
        self._own: dict[int, bytes] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, k: int) -> bytes:
        if type(k) is not int:
            raise TypeError("leaf indices are integers")
        if k < 0:
            k += self._size
        if not 0 <= k < self._size:
            raise IndexError("leaf index out of range")
        leaf = self._own.get(k)
        if leaf is None:
            leaf = self._pre.leaf(k)
        return leaf

    def append(self, leaf: bytes) -> None:
        self._own[self._size] = leaf
        self._size += 1

    def extend_prescanned(self, count: int) -> None:
        if not 0 <= count <= len(self._pre) - self._size:
            raise ValueError(f"{count} more leaves from a prescan of {len(self._pre)} lines at leaf {self._size}")
        self._size += count


class PrescannedTree(MerkleTree):
    """The log's RFC 9162 tree whose perfect subtrees come from a prescan of the same lines.

    The verifier appends every line of the prescanned log, in order, as a leaf (audit_log), so
    the perfect subtree of 2**k leaves at a multiple of 2**k is the one the prescan hashed from
    the same lines; a subtree it does not hold (beyond the lines it read) is hashed as usual.
    Leaves of lines the native scan took are the prescan's own (`extend_prescanned`)."""

    def __init__(self, pre: Any) -> None:
        super().__init__()
        self._pre = pre
        self._leaves = _PrescannedLeaves(pre)  # type: ignore[assignment]  # (the list operations MerkleTree uses)

    def extend_prescanned(self, start: int, end: int) -> None:
        """Append the leaves of prescanned lines start..end-1 (the next ones: start is the size)."""
        if start != len(self._leaves):
            raise ValueError(f"leaves from line {start} appended to a tree of {len(self._leaves)}")
        self._leaves.extend_prescanned(end - start)  # type: ignore[attr-defined]

    def root(self, size: int | None = None) -> bytes:
        """The root of the first `size` leaves; hashed in C (`tree_root`) from the prescan's
        subtrees and this tree's cache of larger perfect ones (each checkpoint asks for one)."""
        native = _native.loaded()
        if native is not None and type(size) is int and 0 < size <= len(self._leaves) and size <= len(self._pre):
            root: bytes = native.tree_root(self._pre, size, self._perfect)
            return root
        return super().root(size)

    def _hash(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n > 1 and n & (n - 1) == 0 and hi <= len(self._leaves):
            h: bytes | None = self._pre.node(lo, n)
            if h is not None:
                return h
        return super()._hash(lo, hi)


def arrivals(seed: bytes, rate_per_day: float, start_ns: int, end_ns: int) -> list[int]:
    """schedule.arrivals(seed, rate_per_day, start_ns, end_ns), in C where it can be."""
    native = _native.chiplog()
    if (
        native is None
        or type(rate_per_day) is not float
        or not (0.0 < rate_per_day and math.isfinite(rate_per_day))
        or not (-_I64 < start_ns < _I64 and -_I64 < end_ns < _I64)
        or len(seed) != 32
    ):
        return schedule.arrivals(seed, rate_per_day, start_ns, end_ns)
    if schedule._fast_log is None:
        schedule._fast_log = schedule._platform_log_is_close()
    if not schedule._fast_log:  # this platform's log is not close enough: every gap is exact (Python)
        return schedule.arrivals(seed, rate_per_day, start_ns, end_ns)
    mean_ns = schedule._NS_PER_DAY / rate_per_day
    result: list[int] = native.arrivals(seed, mean_ns, start_ns, end_ns, float(schedule._WINDOW), schedule.gap_ns)
    return result
