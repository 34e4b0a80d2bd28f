"""Chips that enter by lot: one chipmaker signature per lot, one inclusion check per chip.

A whole lot arrives as its signed manifest and its certificates in lot order: the register
verifies the manifest under a pinned chipmaker root, reads every certificate's claims (worker
processes), recomputes the RFC 9162 root over their bytes and inserts every chip in one
transaction, committed only if the root and count are the ones signed. A single chip arrives
with its inclusion proof instead. Nothing else changes: each chip keeps its own certificate,
which inspections verify as before (docs/registry.md, "Lots").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.merkle import RootBuilder
from computewatch.formats.lot import LotManifest, LotProof, certificate_claims, verify_lot_manifest
from computewatch.registry import db
from computewatch.registry import schema as s
from computewatch.registry._base import RegistryBase
from computewatch.registry.certificates import MAX_PEAK_FLOPS, CertifiedChip, read_certificate
from computewatch.registry.custody import GENESIS
from computewatch.registry.errors import RegistryError

__all__ = ["LotMixin"]

_ITEM_COLUMNS = ("id", "kind", "label", "fab_id", "chipmaker_id", "holder_id", "custody_seq", "status",
                 "device_key", "model", "peak_flops", "certificate", "registered_at")
_SQLITE_CACHE_KIB = 512 * 1024
_CUSTODY_COLUMNS = ("item_id", "seq", "kind", "to_id", "note", "recorded_at", "record_digest")


@dataclass(frozen=True)
class _Context:
    """What a worker needs to turn certificates into rows (picklable)."""

    register: str
    maker_name: str
    maker_keyid: str
    note: str
    now: str


@dataclass
class _Checked:
    """A chunk of certificates read: rows to insert and leaf hashes, or the first refusal."""

    rows: list[tuple[str, str, int, bytes, str]]  # serial, model, peak, device key, custody record digest
    leaves: list[bytes]
    error: tuple[int, str] | None = None


def _custody_prefix(ctx: _Context) -> tuple[bytes, bytes]:
    # The custody record (docs/registry.md) is canonical JSON with sorted keys; only "item" differs
    # between the chips of one lot, so the bytes around it are encoded once.
    probe = "\u0000label\u0000"
    record = canonical_json({
        "v": 1, "register": ctx.register, "item": probe, "seq": 0, "kind": "create", "from": None,
        "to": ctx.maker_name, "facility": None, "statement_sha256": None, "note": ctx.note,
        "recorded_at": ctx.now, "prev": GENESIS,
    })
    marker = canonical_json(probe)
    head, tail = record.split(marker)
    return head, tail


def check_lot_chunk(certs: Sequence[bytes], ctx: _Context, offset: int) -> _Checked:
    """Worker entry point: read each certificate's claims, its leaf hash and custody digest."""
    head, tail = _custody_prefix(ctx)
    rows: list[tuple[str, str, int, bytes, str]] = []
    leaves: list[bytes] = []
    sha = hashlib.sha256
    for k, data in enumerate(certs):
        try:
            c = certificate_claims(data)
        except ComputewatchError as exc:
            return _Checked(rows, leaves, (offset + k, str(exc)))
        problem = _claims_problem(c.serial, c.peak_flops, c.signer_keyids, ctx.maker_keyid)
        if problem:
            return _Checked(rows, leaves, (offset + k, problem))
        leaves.append(sha(b"\x00" + data).digest())
        # A string's canonical JSON is what json.dumps writes with ensure_ascii off.
        digest = sha(head + json.dumps(c.serial, ensure_ascii=False).encode("utf-8") + tail).hexdigest()
        rows.append((c.serial, c.model, c.peak_flops, c.device_key, digest))
    return _Checked(rows, leaves)


def _claims_problem(serial: str, peak: int, signers: Sequence[str], maker_keyid: str) -> str | None:
    if not serial or len(serial) > 200 or "\n" in serial or "/" in serial:
        return f"certified serial {serial!r} is not a usable serial"
    if peak > MAX_PEAK_FLOPS:
        return f"chip {serial}: certified peak FLOP/s {peak} exceeds {MAX_PEAK_FLOPS}"
    if maker_keyid not in signers:
        return f"chip {serial}: its certificate is not signed by the lot's chipmaker key {maker_keyid[:16]}..."
    return None


def _chunks(it: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    while chunk := list(islice(it, size)):
        yield chunk


class LotMixin(RegistryBase):
    def _lot_manifest(self, conn: Connection, manifest: bytes) -> tuple[LotManifest, Any]:
        rows = conn.execute(select(s.parties).where(s.parties.c.role == "chipmaker")).all()
        roots = {r.keyid: self._key_of(r) for r in rows}
        if not roots:
            raise RegistryError("no chipmaker is registered: add the chipmaker's root key first")
        try:
            lot = verify_lot_manifest(manifest, roots)
        except ComputewatchError as exc:
            raise RegistryError(f"lot manifest refused: {exc}") from None
        maker = next(r for r in rows if r.keyid == lot.chipmaker_keyid)
        return lot, maker

    def _record_lot(self, conn: Connection, lot: LotManifest, maker: Any, *, whole: bool) -> None:
        """Record the lot's manifest once; the same lot id under another root is refused."""
        t = s.chip_lots
        row = conn.execute(select(t.c.root).where(t.c.chipmaker_id == maker.id, t.c.label == lot.lot)).first()
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
            return
        conn.execute(insert(t).values(chipmaker_id=maker.id, label=lot.lot, count=lot.count, root=lot.root.hex(),
                                      manifest=lot.envelope.to_json(), registered_at=self.now()))

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
        with self._write() as conn:
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
            self._check_new_chip(conn, chip)  # type: ignore[attr-defined]
            self._record_lot(conn, lot, maker, whole=False)
            fab_id = self._party(conn, fab, ("fab",)).id if fab is not None else None
            self._create_item(  # type: ignore[attr-defined]
                conn, "chip", chip.serial, holder=maker, note=f"certified by {maker.name} in lot {lot.lot}",
                fab_id=fab_id, chipmaker_id=maker.id, device_key=chip.device_key, model=chip.model,
                peak_flops=chip.peak_flops, certificate=chip.certificate,
            )
        return self.chip(chip.serial)  # type: ignore[attr-defined]

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
        batch: int = 50_000,
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Register a whole signed lot: `certificates` are the exact bytes of every chip's
        certificate, in lot order. One transaction: every chip is registered, or none is (a
        certificate outside the signed tree, a count or order that differs, a serial or device
        key already registered). `workers` processes read the certificates (default one per
        CPU; 0 reads them in this process). Returns the lot's summary."""
        if batch < 1:
            raise RegistryError("batch must be >= 1")
        with self._read() as conn:
            lot, maker = self._lot_manifest(conn, manifest)
            fab_id = self._party(conn, fab, ("fab",)).id if fab is not None else None
        ctx = _Context(self.register_id, maker.name, lot.chipmaker_keyid, f"certified by {maker.name} in lot {lot.lot}",
                       self.now())
        workers = (os.cpu_count() or 1) if workers is None else workers
        chunks = _chunks(iter(certificates), batch)
        try:
            with self._write() as conn:
                self._record_lot(conn, lot, maker, whole=True)
                done = self._insert_lot(conn, lot, maker, fab_id, ctx, chunks, workers, batch, progress)
        except _Duplicate as dup:
            raise RegistryError(f"lot {lot.lot!r} refused, nothing registered: {self._diagnose(dup)}") from None
        return {"lot": lot.lot, "chipmaker": maker.name, "chips": done, "root": lot.root.hex()}

    def _insert_lot(self, conn: Connection, lot: LotManifest, maker: Any, fab_id: int | None, ctx: _Context,
                    chunks: Iterator[list[bytes]], workers: int, batch: int,
                    progress: Callable[[int], None] | None) -> int:
        tree = RootBuilder()
        inserter = _BulkInserter(conn, maker.id, fab_id, ctx.now, ctx.note)
        done = 0

        def take(checked: _Checked, certs: list[bytes]) -> None:
            nonlocal done
            if checked.error is not None:
                index, why = checked.error
                raise RegistryError(f"lot {lot.lot!r} refused, nothing registered: certificate {index} (0-based): {why}")
            if done + len(checked.rows) > lot.count:
                raise RegistryError(f"lot {lot.lot!r} refused, nothing registered: more than the {lot.count} "
                                    "certificates its manifest signed")
            for h in checked.leaves:
                tree.add(h)
            inserter.insert(checked.rows, certs)
            done += len(checked.rows)
            if progress:
                progress(done)

        if workers == 0:
            for chunk in chunks:
                take(check_lot_chunk(chunk, ctx, done), chunk)
        else:
            sub = max(1, batch // (2 * workers))
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                pending: list[Any] = []
                offset = 0
                for chunk in chunks:
                    for i in range(0, len(chunk), sub):
                        # Certificates go out to be read; only their claims come back.
                        part = chunk[i : i + sub]
                        pending.append((pool.submit(check_lot_chunk, part, ctx, offset + i), part))
                    offset += len(chunk)
                    while len(pending) > 4 * workers:  # bounded read-ahead; insert while workers read
                        future, part = pending.pop(0)
                        take(future.result(), part)
                for future, part in pending:
                    take(future.result(), part)
        if done != lot.count or tree.root() != lot.root:
            raise RegistryError(
                f"lot {lot.lot!r} refused, nothing registered: the {done} certificates given are not the "
                f"{lot.count} the manifest signed (a certificate added, dropped, altered or reordered)"
            )
        return done

    def _diagnose(self, dup: _Duplicate) -> str:
        t = s.items
        with self._read() as conn:
            for serial in dup.serials:
                row = conn.execute(select(t.c.holder_id).where(t.c.label == serial)).first()
                if row is not None:
                    return f"chip {serial} is already registered (holder {self._name(conn, row.holder_id)!r})"
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
    """Item and custody rows straight through the driver: explicit ids, one executemany (SQLite)
    or COPY (PostgreSQL) per table per chunk, inside the caller's transaction."""

    def __init__(self, conn: Connection, maker_id: int, fab_id: int | None, now: str, note: str) -> None:
        self._conn, self._maker, self._fab, self._now, self._note = conn, maker_id, fab_id, now, note
        self._pg = db.is_postgresql(conn)
        self._raw: Any = conn.connection.driver_connection
        if not self._pg:
            # A lot is one transaction that touches index pages at random (device keys): with
            # SQLite's default 2 MB page cache they spill and are re-read for every chunk.
            conn.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
            self._next = int(conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM items").scalar_one()) + 1

    def _ids(self, n: int) -> list[int]:
        if self._pg:
            rows = self._conn.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('items', 'id')) FROM generate_series(1, %(n)s)", {"n": n}
            ).scalars().all()
            return [int(r) for r in rows]
        first, self._next = self._next, self._next + n
        return list(range(first, self._next))

    def insert(self, rows: list[tuple[str, str, int, bytes, str]], certs: list[bytes]) -> None:
        if not rows:
            return
        ids = self._ids(len(rows))
        m, f, now = self._maker, self._fab, self._now
        items = [(i, "chip", r[0], f, m, m, 0, "active", r[3], r[1], r[2], c, now) for i, r, c in zip(ids, rows, certs, strict=True)]
        custody = [(i, 0, "create", m, self._note, now, r[4]) for i, r in zip(ids, rows, strict=True)]
        failure = None
        try:
            if self._pg:
                cur = self._raw.cursor()
                with cur.copy(f"COPY items ({', '.join(_ITEM_COLUMNS)}) FROM STDIN") as copy:
                    for row in items:
                        copy.write_row(row)
                with cur.copy(f"COPY custody ({', '.join(_CUSTODY_COLUMNS)}) FROM STDIN") as copy:
                    for record in custody:
                        copy.write_row(record)
            else:
                cur = self._raw.cursor()
                cur.executemany(f"INSERT INTO items ({', '.join(_ITEM_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(_ITEM_COLUMNS))})", items)
                cur.executemany(f"INSERT INTO custody ({', '.join(_CUSTODY_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(_CUSTODY_COLUMNS))})", custody)
        except Exception as exc:  # the driver's own IntegrityError: one type per driver
            if "unique" not in str(exc).lower() and "duplicate" not in str(exc).lower():
                raise
            failure = str(exc).splitlines()[0]
        if failure is not None:
            raise _Duplicate([r[0] for r in rows], [r[3] for r in rows], failure)

