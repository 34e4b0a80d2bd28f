"""Signatures of a chip log verified ahead of its audit, in worker processes (issue 24).

The audit is sequential (chain, counters, epochs, tree), but its costliest step per signed line,
one Ed25519 verification, needs only the line and its boot's key. For a big log `SignaturesAhead`
forks workers that, chunk by chunk in log order, find each boot's key (the boot entry's
certificate verified under the chip's device key) and verify every signed line under it, while
the main process audits. The verifier asks `verified(position, key)` before verifying a
signature itself. Ed25519 verification is a pure function of key, signature and message, and
the worker cuts signature and message from the same line with the same functions the verifier
uses, so a "yes" is the verifier's own answer; anything else (another key, a failed line, a
failed worker) leaves the check to the verifier. Reports are the same with and without it
(tests/test_chip_audit_native.py).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.chip_entry import entry_signing_input_from_line, from_b64, parse_entry_line
from computewatch.formats.identity import verify_boot_certificate

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

__all__ = ["PARALLEL_MIN_ENTRIES", "SignaturesAhead", "default_workers"]

# Below this many entries the audit runs in one process: forking a worker and handing it the log
# costs about as much as the signatures it would take over (benchmarks/bench_chip_audit.py,
# `parallel` rows).
PARALLEL_MIN_ENTRIES = 20_000
_BOOT = b'"kind":"boot"'  # in every boot entry's line (a candidate; the worker reads it)
_CHUNK = 2048  # lines per task: early chunks come back while the main process starts auditing

# What a forked worker reads (set before the fork, inherited, never pickled): the log's lines,
# the chip's device key and the positions of its boot entries.
_JOB: tuple[Sequence[bytes], VerifyKey, list[int]] | None = None


def default_workers(entries: int) -> int:
    """Worker processes for a log of `entries` lines: none below PARALLEL_MIN_ENTRIES, on a
    one-core machine, or where forking is unsafe (not Linux, or other threads running: a fork
    copies their locks mid-use); else one per core beyond the auditing one, at most 3."""
    if entries < PARALLEL_MIN_ENTRIES or not sys.platform.startswith("linux") or threading.active_count() > 1:
        return 0
    return max(0, min((os.cpu_count() or 1) - 1, 3))


def _boot_key(lines: Sequence[bytes], device_key: VerifyKey, at: int) -> bytes | None:
    try:
        e = parse_entry_line(lines[at])
        return verify_boot_certificate(e["body"]["boot_certificate"], device_key).boot_key.raw
    except (ComputewatchError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _verify_chunk(lo: int, hi: int) -> list[tuple[int, bytes]]:
    """(position, boot key) of every signed line in [lo, hi) whose signature verifies under the
    key of the latest boot entry at or before it."""
    assert _JOB is not None
    lines, device_key, boots = _JOB
    out: list[tuple[int, bytes]] = []
    k = bisect.bisect_right(boots, lo) - 1
    raw = _boot_key(lines, device_key, boots[k]) if k >= 0 else None
    keys: dict[bytes, VerifyKey] = {}
    for i in range(lo, hi):
        line = lines[i]
        if k + 1 < len(boots) and boots[k + 1] == i:
            k += 1
            raw = _boot_key(lines, device_key, i)
        if raw is None or b',"sig":"' not in line:
            continue
        try:
            e = parse_entry_line(line)
            if "sig" not in e:  # the text was inside a nested value (a boot entry's envelopes)
                continue
            key = keys.get(raw) or keys.setdefault(raw, VerifyKey.from_raw(raw))
            key.verify(from_b64(e["sig"], "sig"), entry_signing_input_from_line(line, e))
        except (ComputewatchError, KeyError, TypeError, ValueError, AttributeError):
            continue  # not verified here: the verifier checks (and names) it
        out.append((i, raw))
    return out


class SignaturesAhead:
    """Verified (position, boot key) pairs of a log, computed by `workers` forked processes."""

    def __init__(self, lines: Sequence[bytes], device_key: VerifyKey, workers: int) -> None:
        # Imported here: the audit of a small log (and every `import`) never pays for them.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        global _JOB
        self._done: set[tuple[int, bytes]] = set()
        self._starts = list(range(0, len(lines), _CHUNK))
        # (A native LogLines finds them in the log's buffer without a bytes object per line.)
        containing = getattr(lines, "containing", None)
        boots = containing(_BOOT) if containing else [i for i, line in enumerate(lines) if _BOOT in line]
        _JOB = (lines, device_key, boots)
        try:
            self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("fork")
            )
            self._futures: list[Future[list[tuple[int, bytes]]] | None] = [
                self._pool.submit(_verify_chunk, lo, min(lo + _CHUNK, len(lines))) for lo in self._starts
            ]
        except (OSError, RuntimeError, ValueError):  # no fork here: the verifier checks everything
            self._pool, self._futures = None, [None] * len(self._starts)
        finally:
            _JOB = None  # the workers hold their copy; the parent drops its reference

    def verified(self, position: int, key: VerifyKey) -> bool:
        """True when the signature of line `position` verified under `key` in a worker."""
        c = position // _CHUNK
        if c >= len(self._futures):
            return False
        future = self._futures[c]
        if future is not None:
            self._futures[c] = None
            with contextlib.suppress(Exception):  # a failed worker answers nothing: the verifier checks
                self._done.update(future.result())
        return (position, key.raw) in self._done

    def close(self) -> None:
        """Wait for the workers to exit (their CPU time then counts in os.times() children)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> SignaturesAhead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
