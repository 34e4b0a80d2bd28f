"""Chips that enter by lot: one chipmaker signature per lot, one inclusion check per chip.

A whole lot arrives as its signed manifest and its certificates in lot order: the register
verifies the manifest under a pinned chipmaker root, reads every certificate's claims (worker
processes), recomputes the RFC 9162 root over their bytes and inserts every chip in one
transaction, committed only if the root and count are the ones signed. A single chip arrives
with its inclusion proof instead. Nothing else changes: each chip keeps its own certificate,
which inspections verify as before (docs/registry.md, "Lots").

A chip of a whole lot costs the database one row: its `items` row (with its certificate) and
the index entries the register's queries need. Its creation record is the lot's, kept once
(registry/_genesis.py): no custody row per chip.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.merkle import RootBuilder
from computewatch.formats.lot import LotManifest, LotProof, certificate_claims, verify_lot_manifest
from computewatch.registry import db
from computewatch.registry import schema as s
from computewatch.registry._genesis import lot_note
from computewatch.registry.unit import Service, pause_point
from computewatch.registry.certificates import MAX_PEAK_FLOPS, CertifiedChip, read_certificate
from computewatch.registry.errors import RegistryError

__all__ = ["LotService"]

# A worker's row holds what differs between the chips of a lot (ChipRow); the columns that are
# the same for the whole lot follow (SQLite: literals in the statement, bound once, not per chip).
_CHIP_COLUMNS = ("label", "device_key", "model", "peak_flops", "certificate")  # ids: the database's own
_LOT_COLUMNS = ("kind", "fab_id", "chipmaker_id", "holder_id", "custody_seq", "status", "registered_at",
                "genesis_lot_id")
_SQLITE_CACHE_KIB = 512 * 1024
_PIECE = 4096  # certificates per piece (a power of two: each piece is a subtree of the lot's tree)
_PG_ITEMS = f"COPY items ({', '.join(_CHIP_COLUMNS + _LOT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# The columns' PostgreSQL types, in that order (binary COPY sends values as they are stored: no
# text escaping of the certificate and device key on either side).
_PG_TYPES = ("varchar", "bytea", "varchar", "int8", "bytea", "varchar", "int8", "int8", "int8", "int4",
             "varchar", "varchar", "int8")


@dataclass(frozen=True)
class _Context:
    """What a worker needs to turn certificates into rows (picklable)."""

    maker_keyid: str
    maker_id: int
    fab_id: int | None
    lot_id: int  # the lot's chip_lots row: every chip's creation record
    now: str


ChipRow = tuple[str, bytes, str, int, bytes]  # _CHIP_COLUMNS


@dataclass
class _Checked:
    """A piece of a lot read: its rows and its perfect subtrees (largest first), or the first refusal."""

    items: list[ChipRow]
    subtrees: list[tuple[bytes, int]]
    error: tuple[int, str] | None = None


def _perfect_root(level: list[bytes]) -> bytes:
    """RFC 9162 root of a power-of-two run of leaf hashes, one level at a time."""
    sha = hashlib.sha256
    while len(level) > 1:
        level = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def _subtrees(leaves: list[bytes]) -> list[tuple[bytes, int]]:
    """The leaves as perfect subtrees, largest first (the binary decomposition of their count):
    at an offset that is a multiple of the largest, these are nodes of the lot's own tree."""
    out, pos = [], 0
    while pos < len(leaves):
        size = 1 << ((len(leaves) - pos).bit_length() - 1)
        out.append((_perfect_root(leaves[pos : pos + size]), size))
        pos += size
    return out


def check_lot_piece(certs: Sequence[bytes], ctx: _Context, offset: int) -> _Checked:
    """Worker entry point: read each certificate's claims, bind it to the lot (its signer is the
    lot's key; serial and peak usable), hash it as a leaf, and build its item row."""
    items: list[ChipRow] = []
    leaves: list[bytes] = []
    sha, keyid = hashlib.sha256, ctx.maker_keyid
    for k, data in enumerate(certs):
        try:
            c = certificate_claims(data)
        except ComputewatchError as exc:
            return _Checked(items, [], (offset + k, str(exc)))
        problem = _claims_problem(c.serial, c.peak_flops, c.signer_keyids, keyid)
        if problem:
            return _Checked(items, [], (offset + k, problem))
        leaves.append(sha(b"\x00" + data).digest())
        items.append((c.serial, c.device_key, c.model, c.peak_flops, data))
    return _Checked(items, _subtrees(leaves))


class _Frontier(RootBuilder):
    """The lot's root from its perfect subtrees as they arrive in lot order: RootBuilder fed a
    subtree of 2^k leaves at a time (each at an offset that is a multiple of 2^k)."""

    def push(self, node: bytes, size: int) -> None:
        if self.size % size:
            raise AssertionError("a lot piece's subtree is not aligned in the lot's tree")
        self.size += size
        while self._sizes and self._sizes[-1] == size:
            node = hashlib.sha256(b"\x01" + self._stack.pop() + node).digest()
            self._sizes.pop()
            size *= 2
        self._stack.append(node)
        self._sizes.append(size)


def _claims_problem(serial: str, peak: int, signers: Sequence[str], maker_keyid: str) -> str | None:
    if not serial or len(serial) > 200 or "\n" in serial or "/" in serial:
        return f"certified serial {serial!r} is not a usable serial"
    if peak > MAX_PEAK_FLOPS:
        return f"chip {serial}: certified peak FLOP/s {peak} exceeds {MAX_PEAK_FLOPS}"
    if maker_keyid not in signers:
        return f"chip {serial}: its certificate is not signed by the lot's chipmaker key {maker_keyid[:16]}..."
    return None


def _pieces(it: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    while piece := list(islice(it, size)):
        yield piece


class LotService(Service):
    def _lot_manifest(self, conn: Connection, manifest: bytes) -> tuple[LotManifest, Any]:
        rows = conn.execute(select(s.parties).where(s.parties.c.role == "chipmaker")).all()
        roots = {r.keyid: self._uow.key_of(r) for r in rows}
        if not roots:
            raise RegistryError("no chipmaker is registered: add the chipmaker's root key first")
        try:
            lot = verify_lot_manifest(manifest, roots)
        except ComputewatchError as exc:
            raise RegistryError(f"lot manifest refused: {exc}") from None
        maker = next(r for r in rows if r.keyid == lot.chipmaker_keyid)
        return lot, maker

    def _record_lot(self, conn: Connection, lot: LotManifest, maker: Any, *, whole: bool, now: str | None = None) -> int:
        """Record the lot's manifest once (at `now`: a whole lot's chips' creation time); the same
        lot id under another root is refused. Returns the lot's row id."""
        t = s.chip_lots
        row = conn.execute(select(t.c.id, t.c.root).where(t.c.chipmaker_id == maker.id, t.c.label == lot.lot)).first()
        if row is not None:
            if row.root != lot.root.hex():
                raise RegistryError(
                    f"chipmaker {maker.name!r} already signed lot {lot.lot!r} with another root: two manifests for "
                    "one lot (the register keeps the first)"
                )
            if whole:
                raise RegistryError(
                    f"lot {lot.lot!r} of {maker.name!r} is already registered (whole, or chip by chip): its "
                    "remaining chips go in one at a time with their inclusion proofs"
                )
            return int(row.id)
        return self._uow.insert_id(conn, insert(t).values(
            chipmaker_id=maker.id, label=lot.lot, count=lot.count, root=lot.root.hex(), manifest=lot.envelope.to_json(),
            registered_at=now or self._uow.now()))

    # ------------------------------------------------------------------ one chip
    def register_lot_chip(
        self, manifest: bytes, certificate: bytes, proof: bytes | LotProof, *, fab: str | None = None
    ) -> dict[str, Any]:
        """Register one chip of a signed lot from its certificate and its inclusion proof
        (`lot-proof.json`): one manifest signature, one proof, no certificate signature."""
        try:
            proof = proof if isinstance(proof, LotProof) else LotProof.from_json(proof)
            claims = certificate_claims(certificate)
        except ComputewatchError as exc:
            raise RegistryError(f"lot chip refused: {exc}") from None
        with self._uow.write() as conn:
            lot, maker = self._lot_manifest(conn, manifest)
            try:
                proof.verify(lot, certificate)
            except ComputewatchError as exc:
                raise RegistryError(f"lot chip refused: {exc}") from None
            problem = _claims_problem(claims.serial, claims.peak_flops, claims.signer_keyids, lot.chipmaker_keyid)
            if problem:
                raise RegistryError(f"lot chip refused: {problem}")
            chip = CertifiedChip(claims.serial, claims.model, claims.peak_flops, claims.device_key, bytes(certificate),
                                 lot.chipmaker_keyid)
            self._svc.chips.check_new_chip(conn, chip)
            self._record_lot(conn, lot, maker, whole=False)
            fab_id = self._uow.party_row(conn, fab, ("fab",)).id if fab is not None else None
            self._svc.chips.create_item(
                conn, "chip", chip.serial, holder=maker, note=lot_note(maker.name, lot.lot),
                fab_id=fab_id, chipmaker_id=maker.id, device_key=chip.device_key, model=chip.model,
                peak_flops=chip.peak_flops, certificate=chip.certificate,
            )
        return self._svc.chips.chip(chip.serial)

    def register_lot_chip_dir(self, manifest: bytes, chip_dir: str | os.PathLike[str], *, fab: str | None = None) -> dict[str, Any]:
        """`register_lot_chip` from a chip state directory (`certificate.json`, `lot-proof.json`)."""
        path = Path(chip_dir) / "lot-proof.json"
        try:
            proof = path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        return self.register_lot_chip(manifest, read_certificate(chip_dir), proof, fab=fab)

    # ------------------------------------------------------------------ a whole lot
    def register_lot(
        self,
        manifest: bytes,
        certificates: Iterable[bytes],
        *,
        fab: str | None = None,
        batch: int = _PIECE,
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Register a whole signed lot: `certificates` are the exact bytes of every chip's
        certificate, in lot order. One transaction: every chip is registered, or none is (a
        certificate outside the signed tree, a count or order that differs, a serial or device
        key already registered). Certificates are read in pieces of `batch` (rounded down to a
        power of two, so that each piece is one subtree of the lot's tree) by `workers` processes
        (default one per CPU; 0 reads them in this process). Returns the lot's summary."""
        if batch < 1:
            raise RegistryError("batch must be >= 1")
        piece = 1 << (batch.bit_length() - 1)
        with self._uow.read() as conn:
            lot, maker = self._lot_manifest(conn, manifest)
            fab_id = self._uow.party_row(conn, fab, ("fab",)).id if fab is not None else None
        workers = (os.cpu_count() or 1) if workers is None else workers
        pieces = _pieces(iter(certificates), piece)
        now = self._uow.now()
        try:
            with self._uow.write() as conn:
                lot_id = self._record_lot(conn, lot, maker, whole=True, now=now)
                ctx = _Context(lot.chipmaker_keyid, maker.id, fab_id, lot_id, now)
                done = self._insert_lot(conn, lot, ctx, pieces, workers, progress)
        except _Duplicate as dup:
            raise RegistryError(f"lot {lot.lot!r} refused, nothing registered: {self._diagnose(dup)}") from None
        return {"lot": lot.lot, "chipmaker": maker.name, "chips": done, "root": lot.root.hex()}

    def _insert_lot(self, conn: Connection, lot: LotManifest, ctx: _Context, pieces: Iterator[list[bytes]],
                    workers: int, progress: Callable[[int], None] | None) -> int:
        tree = _Frontier()
        with _BulkInserter(conn, ctx) as inserter:

            def take(checked: _Checked) -> None:
                if checked.error is not None:
                    index, why = checked.error
                    raise RegistryError(f"lot {lot.lot!r} refused, nothing registered: certificate {index} (0-based): "
                                        f"{why}")
                if tree.size + len(checked.items) > lot.count:
                    raise RegistryError(f"lot {lot.lot!r} refused, nothing registered: more than the {lot.count} "
                                        "certificates its manifest signed")
                for node, size in checked.subtrees:
                    tree.push(node, size)
                inserter.insert(checked.items)
                pause_point("lot")  # crash tests: killed here, the rows written so far must vanish
                if progress:
                    progress(tree.size)

            offset = 0
            if workers == 0:
                for piece in pieces:
                    take(check_lot_piece(piece, ctx, offset))
                    offset += len(piece)
            else:
                with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                    pending: deque[Future[_Checked]] = deque()
                    for piece in pieces:
                        # Certificates go out to be read; rows (with their certificates) and
                        # subtree roots come back.
                        pending.append(pool.submit(check_lot_piece, piece, ctx, offset))
                        offset += len(piece)
                        while len(pending) > 2 * workers:  # bounded read-ahead; insert while workers read
                            take(pending.popleft().result())
                    while pending:
                        take(pending.popleft().result())
        if tree.size != lot.count or tree.root() != lot.root:
            raise RegistryError(
                f"lot {lot.lot!r} refused, nothing registered: the {tree.size} certificates given are not the "
                f"{lot.count} the manifest signed (a certificate added, dropped, altered or reordered)"
            )
        return tree.size

    def _diagnose(self, dup: _Duplicate) -> str:
        t = s.items
        with self._uow.read() as conn:
            for serial in dup.serials:
                row = conn.execute(select(t.c.holder_id).where(t.c.label == serial)).first()
                if row is not None:
                    return f"chip {serial} is already registered (holder {self._uow.name_of(conn, row.holder_id)!r})"
            for serial, key in zip(dup.serials, dup.keys, strict=True):
                clone = conn.execute(select(t.c.label).where(t.c.device_key == key)).first()
                if clone is not None:
                    return f"the device key of chip {serial} is already registered to chip {clone.label}: a cloned identity"
        seen: set[str] = set()
        for serial in dup.serials:
            if serial in seen:
                return f"serial {serial} appears twice in the lot"
            seen.add(serial)
        return f"a serial or device key appears twice in the lot ({dup.detail})"


class _Duplicate(Exception):
    def __init__(self, serials: list[str], keys: list[bytes], detail: str) -> None:
        self.serials, self.keys, self.detail = serials, keys, detail


class _BulkInserter:
    """Item rows straight through the driver, inside the caller's transaction: one executemany
    per piece (SQLite) or one binary COPY per piece (PostgreSQL). Ids are the database's own.

    On PostgreSQL the server's work on a piece (its constraint and index checks) is most of the
    cost and runs in one backend: a writer thread sends each piece while this thread reads the
    next from the workers, so the backend is not idle while the client gets rows ready. The
    transaction's connection belongs to the writer until `__exit__` has joined it."""

    def __init__(self, conn: Connection, ctx: _Context) -> None:
        self._conn = conn
        self._pg = db.is_postgresql(conn)
        fab = "NULL" if ctx.fab_id is None else str(int(ctx.fab_id))
        maker, lot = int(ctx.maker_id), int(ctx.lot_id)
        now = "'" + ctx.now.replace("'", "''") + "'"  # an SQL string literal (quotes doubled)
        # The same for every chip of the lot: integers and one quoted string, written once.
        self._lot_values = ("chip", ctx.fab_id, maker, maker, 0, "active", ctx.now, lot)
        self._sqlite_sql = (f"INSERT INTO items ({', '.join(_CHIP_COLUMNS + _LOT_COLUMNS)}) VALUES "
                            f"(?, ?, ?, ?, ?, 'chip', {fab}, {maker}, {maker}, 0, 'active', {now}, {lot})")
        raw = conn.connection.driver_connection
        assert raw is not None  # a connection checked out for this transaction
        self._raw = raw
        self._cache: int | None = None
        self._queue: queue.Queue[list[ChipRow] | None] = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self._writer: threading.Thread | None = None

    def __enter__(self) -> _BulkInserter:
        if self._pg:
            self._writer = threading.Thread(target=self._write_pieces, name="computewatch-lot-copy", daemon=True)
            self._writer.start()
        else:
            # A lot is one transaction that touches index pages at random (device keys): with
            # SQLite's default 2 MB page cache they spill and are re-read for every piece. The
            # connection goes back to the pool with its own cache size.
            self._cache = int(self._conn.exec_driver_sql("PRAGMA cache_size").scalar_one())
            self._conn.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
            # SQLite evaluates a CHECK of the form `x IN (a, b, c)` by building a temporary table
            # for every row (about 12 of the 29 us a chip spent in executemany at 10^6 chips).
            # The statement's kind and status are literals ('chip', 'active': both allowed), so
            # the bulk statement skips the checks; every other statement on this connection
            # checks them again after __exit__.
            self._conn.exec_driver_sql("PRAGMA ignore_check_constraints=ON")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._put(None)  # the end: the writer finishes what it holds, or stops at a failure
            self._writer.join()
            self._writer = None
            if exc[0] is None:
                self._raise_failure()
        if self._cache is not None:
            self._conn.exec_driver_sql(f"PRAGMA cache_size={self._cache}")
            self._conn.exec_driver_sql("PRAGMA ignore_check_constraints=OFF")

    def insert(self, items: list[ChipRow]) -> None:
        """Insert one piece's rows (PostgreSQL: hand them to the writer; a failure of an earlier
        piece is raised here, or at the latest when the inserter closes)."""
        if not items:
            return
        if self._pg:
            self._raise_failure()
            self._put(items)
        else:
            self._insert_now(items)

    def _put(self, items: list[ChipRow] | None) -> None:
        while True:  # a writer that failed takes nothing more: stop waiting for room
            assert self._writer is not None
            try:
                self._queue.put(items, timeout=0.1)
                return
            except queue.Full:
                if not self._writer.is_alive():
                    return

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _write_pieces(self) -> None:
        while (items := self._queue.get()) is not None:
            try:
                self._insert_now(items)
            except BaseException as exc:  # handed to the caller's thread
                self._failure = exc
                return

    def _insert_now(self, items: list[ChipRow]) -> None:
        failure = None
        cur = self._raw.cursor()
        try:
            if self._pg:
                same = self._lot_values
                with cur.copy(_PG_ITEMS) as copy:
                    copy.set_types(list(_PG_TYPES))
                    for row in items:
                        copy.write_row(row + same)
            else:
                cur.executemany(self._sqlite_sql, items)
        except Exception as exc:  # the driver's own IntegrityError: one type per driver
            if "unique" not in str(exc).lower() and "duplicate" not in str(exc).lower():
                raise
            failure = str(exc).splitlines()[0]
        finally:
            cur.close()
        if failure is not None:
            raise _Duplicate([r[0] for r in items], [r[1] for r in items], failure)
