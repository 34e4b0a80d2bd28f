"""The service's copy of each report-mode chip's log: checked on arrival, durable before the ack.

Every entry line is fed to the auditor's incremental checker (`LogVerifier`: serial, counter,
hash chain, signature under the boot key the device key certified, schedule; in log v2 a
report-mode chip signs every entry, and an unsigned v2 entry is stored and acknowledged but
pending until a checkpoint of its boot verifies: `attributed` marks the end of the attributed
prefix, served as the tree head's `attributed`), then inserted in
`service_log_entries` and committed (SQLite `synchronous=FULL`, PostgreSQL commit; entries of
many chips arriving together share one transaction: `GroupCommitter`), and only then
acknowledged. A line resent after a lost ack is the stored line: it is acked again, nothing is
stored twice. A different line at a stored counter is refused: the copy never forks.
After a restart each chip's checker is rebuilt from its stored lines on first use. With several
server processes on one database, the database is the copy: a process catches its checker up
with the rows others stored before it refuses an entry as out of order or serves a tree head,
and the (serial, counter) primary key decides between two processes offered the same counter.
A chip log v2 batch (`append_batch`: consecutive entries ending in the chip's signed checkpoint)
is fed the same way and stored whole, in one transaction, only if its checkpoint attributes
every entry of it; else nothing of it is kept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.merkle import MerkleTree
from computewatch.crypto.signing import VerifyKey
from computewatch.formats.chip_audit import LogVerifier
from computewatch.formats.chip_entry import expected_ack, parse_entry_line
from computewatch.formats.identity import verify_chip_certificate
from computewatch.registry import db as reg_db
from computewatch.registry import schema as rs
from computewatch.service import schema as ss
from computewatch.service.commit import GroupCommitter
from computewatch.service.errors import ServiceError
from computewatch.service.statements import format_time

__all__ = ["Ack", "ChipLogs"]


@dataclass(frozen=True)
class Ack:
    body: bytes
    counter: int
    duplicate: bool


@dataclass
class _Chip:
    verifier: LogVerifier
    lock: threading.Lock = field(default_factory=threading.Lock)
    ack_tail: bytes = b""  # the end of every ack to this chip: `"serial":"<serial>","v":1}`

    def ack(self, counter: int, sha256_hex: str) -> bytes:
        """`expected_ack(serial, counter, line)` from the line's SHA-256 (hex), without a JSON
        encode: canonical JSON sorts the ack's keys `counter, entry_sha256, serial, v`."""
        return b'{"counter":%d,"entry_sha256":"%s",%s' % (counter, sha256_hex.encode(), self.ack_tail)


class ChipLogs:
    def __init__(self, engine: Engine, committer: GroupCommitter | None = None) -> None:
        self._engine = engine
        self._committer = committer
        self._chips: dict[str, _Chip] = {}
        self._guard = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()

    # ------------------------------------------------------------------ state
    def _certificate(self, serial: str) -> tuple[Envelope, VerifyKey]:
        i, p = rs.items, rs.parties
        with reg_db.read(self._engine) as conn:
            row = conn.execute(
                select(i.c.certificate, p.c.public_key).join(p, p.c.id == i.c.chipmaker_id).where(i.c.label == serial, i.c.kind == "chip")
            ).first()
        if row is None or row.certificate is None:
            raise ServiceError(404, f"chip {serial!r} is not registered: its entries are not accepted")
        return Envelope.from_json(bytes(row.certificate)), VerifyKey.from_raw(bytes(row.public_key))

    def _chip(self, serial: str) -> _Chip:
        chip = self._chips.get(serial)
        if chip is not None:
            return chip
        with self._guard:
            lock = self._loading.setdefault(serial, threading.Lock())
        with lock:
            chip = self._chips.get(serial)
            if chip is not None:
                return chip
            env, root = self._certificate(serial)
            verifier = LogVerifier(verify_chip_certificate(env, root), root)
            t = ss.log_entries
            with reg_db.read(self._engine) as conn:
                rows = conn.execute(select(t.c.counter, t.c.line).where(t.c.serial == serial).order_by(t.c.counter)).all()
            for row in rows:
                problems = verifier.feed(bytes(row.line))
                if problems or row.counter != verifier.position - 1:
                    raise ServiceError(500, f"stored copy of chip {serial}'s log fails its check at entry {row.counter}")
            chip = _Chip(verifier, ack_tail=canonical_json({"serial": serial, "v": 1})[1:])
            self._chips[serial] = chip
            return chip

    def _catch_up(self, serial: str, chip: _Chip) -> None:
        """Feed the chip's checker the rows other server processes stored since (caller holds
        `chip.lock`): with several processes on one database, the database is the log copy."""
        v = chip.verifier
        t = ss.log_entries
        with reg_db.read(self._engine) as conn:
            rows = conn.execute(select(t.c.counter, t.c.line).where(t.c.serial == serial, t.c.counter >= v.position)
                                .order_by(t.c.counter)).all()
        for row in rows:
            if row.counter != v.position or v.feed(bytes(row.line)):
                self._chips.pop(serial, None)
                raise ServiceError(500, f"stored copy of chip {serial}'s log fails its check at entry {row.counter}")

    # ------------------------------------------------------------------ entries
    def _store(self, rows: list[dict[str, Any]], label: str) -> None:
        """Insert a chip's checked rows in one durable transaction (the group commit when there is
        one); an IntegrityError means another server process stored a counter first."""
        if self._committer is not None:
            self._committer.insert_many(ss.log_entries, rows, label=label)
        else:
            with reg_db.write(self._engine) as conn:
                conn.execute(insert(ss.log_entries), rows)

    def _stored_already(self, serial: str, first: int, lines: list[bytes]) -> bool:
        """Whether every line is already stored at its counter, byte for byte (a resent batch)."""
        return all(self.line(serial, first + k) == line for k, line in enumerate(lines))

    def append(self, serial: str, line: bytes) -> Ack:
        entry = _parse(serial, line)
        chip = self._chip(serial)
        counter = entry["counter"]
        with chip.lock:
            v = chip.verifier
            if counter > v.position:  # another server process may have stored the ones before
                self._catch_up(serial, chip)
            if counter < v.position:
                return self._resent(serial, counter, line)
            if counter > v.position:
                raise ServiceError(409, f"entry {counter} of chip {serial} arrives before entry {v.position}: send the entries in order")
            saved, row = _check(serial, chip, counter, line)
            try:
                self._store([row], f"{serial}#{counter}")
            except IntegrityError:
                # Another server process stored this counter first: the database decides.
                v.restore_state(saved)
                self._catch_up(serial, chip)
                if counter < v.position:
                    return self._resent(serial, counter, line)
                self._chips.pop(serial, None)
                raise
            except BaseException:
                v.restore_state(saved)
                self._chips.pop(serial, None)  # reloaded from the database on next use
                raise
            return Ack(expected_ack(serial, counter, line), counter, False)

    async def append_in_loop(self, serial: str, line: bytes) -> Ack | None:
        """`append` on the event loop's thread, for the common case: the chip is loaded, its lock
        is free and the line is its next entry. The same checks, then the row goes to the group
        commit and the coroutine (no thread) waits for the commit. None: take the threaded
        `append` (chip not loaded, lock busy, a resend or a gap, another process stored the counter)."""

        def check(chip: _Chip, counter: int) -> tuple[Any, list[dict[str, Any]]]:
            saved, row = _check(serial, chip, counter, line)
            return saved, [row]

        return await self._in_loop(serial, line, check)

    def append_batch(self, serial: str, lines: list[bytes]) -> Ack:
        """A chip log v2 batch: consecutive entries that end in a checkpoint the chip signed (its
        natural upload unit: one signature for the batch, every entry hash-chained to it). All
        are checked, then stored in one transaction, then acked with the ack of the last line
        (the checkpoint, whose signed `prev` chain binds every entry before it); or none is: a
        batch with a refused entry, or whose entries its checkpoint does not attribute to the
        chip (a forged, altered or unsigned entry, a checkpoint of another boot), stores nothing.
        A batch resent after a lost ack (every line already stored, byte for byte) is acked again."""
        if not lines:
            raise ServiceError(422, "empty batch: a batch holds one or more entries ending in a signed checkpoint")
        first, last = _parse(serial, lines[0])["counter"], _parse(serial, lines[-1])["counter"]
        chip = self._chip(serial)
        with chip.lock:
            v = chip.verifier
            if first > v.position:  # another server process may have stored the ones before
                self._catch_up(serial, chip)
            if first < v.position:
                if self._stored_already(serial, first, lines):
                    return Ack(expected_ack(serial, last, lines[-1]), last, True)
                raise ServiceError(409, f"batch from entry {first} of chip {serial} overlaps stored entries with other content "
                                        f"or goes past the stored copy's end ({v.position}): send batches from the next entry")
            if first > v.position:
                raise ServiceError(409, f"batch from entry {first} of chip {serial} arrives before entry {v.position}: send in order")
            saved, rows = _check_batch(serial, chip, first, lines)
            try:
                self._store(rows, f"{serial}#{first}-{last}")
            except IntegrityError:
                v.restore_state(saved)  # another server process stored these counters first: the database decides
                self._catch_up(serial, chip)
                if first < v.position and self._stored_already(serial, first, lines):
                    return Ack(expected_ack(serial, last, lines[-1]), last, True)
                self._chips.pop(serial, None)
                raise ServiceError(409, f"batch from entry {first} of chip {serial} was stored meanwhile with other content") from None
            except BaseException:
                v.restore_state(saved)
                self._chips.pop(serial, None)  # reloaded from the database on next use
                raise
            return Ack(chip.ack(last, rows[-1]["entry_sha256"]), last, False)

    async def append_batch_in_loop(self, serial: str, lines: list[bytes]) -> Ack | None:
        """`append_batch` on the event loop's thread for the common case (the chip is loaded, its
        lock is free, the batch starts at its next entry), as `append_in_loop` for one entry: a
        batch is checked in one go (no thread sharing the GIL with others' batches), its rows
        wait for their commit as a coroutine. None: take the threaded `append_batch`."""
        return await self._in_loop(serial, lines[0], lambda chip, first: _check_batch(serial, chip, first, lines))

    async def _in_loop(self, serial: str, first_line: bytes,
                       check: Callable[[_Chip, int], tuple[Any, list[dict[str, Any]]]]) -> Ack | None:
        """The event loop's path for one entry or one batch starting at `first_line`: `check`
        (under the chip's lock) feeds the checker and returns its state before and the rows."""
        chip = self._chips.get(serial)
        if chip is None or self._committer is None:
            return None
        first = _routing_counter(first_line)
        if first is None or not chip.lock.acquire(blocking=False):
            return None
        held = True
        try:
            if first != chip.verifier.position:
                return None
            saved, rows = check(chip, first)
            last = first + len(rows) - 1  # the checker accepted consecutive counters

            def settled(error: BaseException | None) -> None:
                # The writer thread, once the rows' transaction committed or failed: only then is
                # the chip's next entry checked (against a committed predecessor).
                if error is not None:
                    chip.verifier.restore_state(saved)
                    self._chips.pop(serial, None)  # reloaded (and caught up) from the database on next use
                chip.lock.release()

            held = False  # from here `settled` releases the lock
            label = f"{serial}#{first}" if first == last else f"{serial}#{first}-{last}"
            try:
                await self._committer.insert_many_async(ss.log_entries, rows, label, settled)
            except IntegrityError:
                return None  # another server process stored a counter: the threaded path decides
            return Ack(chip.ack(last, rows[-1]["entry_sha256"]), last, False)
        finally:
            if held:
                chip.lock.release()

    def _resent(self, serial: str, counter: int, line: bytes) -> Ack:
        """A line at a stored counter: the stored line is acked again; any other is a fork, refused."""
        if self.line(serial, counter) == line:
            return Ack(expected_ack(serial, counter, line), counter, True)
        raise ServiceError(409, f"entry {counter} of chip {serial} is already stored with other content: refused (the log copy never forks)")

    def line(self, serial: str, counter: int) -> bytes | None:
        t = ss.log_entries
        with reg_db.read(self._engine) as conn:
            row = conn.execute(select(t.c.line).where(t.c.serial == serial, t.c.counter == counter)).first()
        return None if row is None else bytes(row.line)

    def lines(self, serial: str, start: int = 0, limit: int = 1000) -> list[bytes]:
        t = ss.log_entries
        with reg_db.read(self._engine) as conn:
            rows = conn.execute(
                select(t.c.line).where(t.c.serial == serial, t.c.counter >= start).order_by(t.c.counter).limit(limit)
            ).all()
        return [bytes(r.line) for r in rows]

    def count(self, serial: str) -> int:
        return self.tree(serial)[1]

    def tree(self, serial: str) -> tuple[MerkleTree, int]:
        """The chip's Merkle tree and its size, read under the chip's lock after catching up with
        the database (proofs use sizes up to it; another server process may have stored more)."""
        chip = self._chip(serial)
        with chip.lock:
            self._catch_up(serial, chip)
            return chip.verifier.tree, chip.verifier.position

    def attributed(self, serial: str) -> int:
        """Entries [0, n) of the chip's copy tied to the chip by a verified signature; the rest
        (log v2 entries no checkpoint of their boot covers yet) are pending."""
        chip = self._chip(serial)
        with chip.lock:
            return chip.verifier.attributed

    def counts(self) -> dict[str, int]:
        """Stored entries per chip (from the database)."""
        from sqlalchemy import func

        t = ss.log_entries
        with reg_db.read(self._engine) as conn:
            rows = conn.execute(select(t.c.serial, func.count()).group_by(t.c.serial)).all()
        return {str(r[0]): int(r[1]) for r in rows}


def _parse(serial: str, line: bytes) -> dict[str, Any]:
    try:
        entry = parse_entry_line(line)
    except ComputewatchError as exc:
        raise ServiceError(422, f"malformed entry: {exc}") from None
    if entry["serial"] != serial:
        raise ServiceError(422, f"entry belongs to chip {entry['serial']!r}, not {serial!r}")
    return entry


_COUNTER_KEY = b',"counter":'


def _routing_counter(line: bytes) -> int | None:
    """The counter of an entry line, read without parsing it, only to route the line (the next
    entry, a resend, a gap); None when it cannot be read so (the full parse then decides).

    In a canonical entry line the top-level `counter` follows `body` (keys sort `body, boot,
    busy_ns, clock_ns, counter, ...`) and every key after it holds a string or an integer, in
    which `,"counter":` cannot occur (a string's quotes are escaped), so the last occurrence is
    the top-level key. A line that is not canonical may route wrongly, but the checker then
    refuses it: `LogVerifier.feed` parses it fully and checks its counter against its own."""
    at = line.rfind(_COUNTER_KEY)
    if at < 0:
        return None
    start = at + len(_COUNTER_KEY)
    end = line.find(b",", start, start + 21)
    digits = line[start:end]
    if end < 0 or not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
        return None
    return int(digits)


_now: tuple[int, str] = (0, "")  # (a whole second, its format_time): one strftime a second under load


def _received_at() -> str:
    global _now
    t = int(time.time())
    if _now[0] != t:
        _now = (t, format_time(datetime.fromtimestamp(t, UTC)))
    return _now[1]


def _check_batch(serial: str, chip: _Chip, first: int, lines: list[bytes]) -> tuple[Any, list[dict[str, Any]]]:
    """Feed a batch's lines to the chip's checker (caller holds its lock) and require that its
    checkpoint attributes all of them; a refused batch leaves the checker as it was. Returns the
    checker's state before the batch and the rows to store."""
    v = chip.verifier
    saved = v.save_state()
    try:
        rows = [_check(serial, chip, first + k, line, restore=False)[1] for k, line in enumerate(lines)]
        if v.attributed != v.position:
            span = f"entry {v.attributed}" if v.attributed == v.position - 1 else f"entries {v.attributed}-{v.position - 1}"
            raise ServiceError(422, f"batch of chip {serial} refused: {span} not covered by a signed checkpoint of "
                                    "their boot at the batch's end (a batch ends in its checkpoint)")
    except BaseException:
        v.restore_state(saved)
        raise
    return saved, rows


def _check(serial: str, chip: _Chip, counter: int, line: bytes, restore: bool = True) -> tuple[Any, dict[str, Any]]:
    """Feed the line to the chip's checker (caller holds its lock); a refused line leaves the
    checker as it was (with `restore`; else the caller restores its own saved state). Returns
    the checker's state before the line (None without `restore`) and the row to store."""
    v = chip.verifier
    saved = v.save_state() if restore else None
    problems = v.feed(line)
    if problems:
        if saved is not None:
            v.restore_state(saved)
        reason = "; ".join(p.problem for p in problems[:3])
        status = 401 if any("signature" in p.problem for p in problems) else 422
        raise ServiceError(status, f"entry {counter} of chip {serial} refused: {reason}")
    row = {"serial": serial, "counter": counter, "line": line, "entry_sha256": hashlib.sha256(line).hexdigest(),
           "received_at": _received_at()}
    return saved, row
