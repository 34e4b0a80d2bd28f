"""Parties and production: chipmakers, owners, inspectors, fabs, lots, wafers, dies, chips."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from multiprocessing import get_context
from typing import Any

from sqlalchemy import Connection, insert, select

from computewatch.crypto.signing import VerifyKey
from computewatch.registry import schema as s
from computewatch.registry._parties import check_name
from computewatch.registry.rows import CustodyRecord, FabLot, ItemListing
from computewatch.registry.unit import Service
from computewatch.registry.certificates import (
    CertifiedChip,
    check_batch,
    check_certificate,
    read_certificate,
)
from computewatch.registry.custody import GENESIS, custody_record, record_digest
from computewatch.registry.errors import RegistryError

__all__ = ["ChipService"]

class ChipService(Service):
    # ------------------------------------------------------------------ production at fabs
    def produce(self, fab: str, lot: str, wafers: int, dies_per_wafer: int = 0) -> dict[str, Any]:
        """Record a production lot: `wafers` wafers (labels LOT/W01...) and, when given,
        `dies_per_wafer` dies on each (LOT/W01/D0001...), all held by the fab."""
        check_name(lot, "lot")
        if not isinstance(wafers, int) or not 1 <= wafers <= 10_000:
            raise RegistryError(f"a lot holds 1 to 10000 wafers, got {wafers!r}")
        if not isinstance(dies_per_wafer, int) or not 0 <= dies_per_wafer <= 100_000:
            raise RegistryError(f"dies per wafer must be 0 to 100000, got {dies_per_wafer!r}")
        with self._uow.write() as conn:
            fab_row = self._uow.party_row(conn, fab, ("fab",))
            if conn.execute(select(s.lots.c.id).where(s.lots.c.label == lot)).first() is not None:
                raise RegistryError(f"lot {lot!r} is already recorded")
            now = self._uow.now()
            lot_id = self._uow.insert_id(conn,
                insert(s.lots).values(
                    fab_id=fab_row.id, label=lot, wafers=wafers, dies_per_wafer=dies_per_wafer, produced_at=now
                )
            )
            width = max(2, len(str(wafers)))
            labels = [f"{lot}/W{w:0{width}d}" for w in range(1, wafers + 1)]
            for label in labels:
                self._check_free_label(conn, label)
                wafer_id = self.create_item(conn, "wafer", label, holder=fab_row, lot_id=lot_id, fab_id=fab_row.id,
                                             note=f"produced by {fab} in lot {lot}")
                dwidth = max(4, len(str(dies_per_wafer)))
                for d in range(1, dies_per_wafer + 1):
                    die = f"{label}/D{d:0{dwidth}d}"
                    self.create_item(conn, "die", die, holder=fab_row, lot_id=lot_id, fab_id=fab_row.id,
                                      parent_id=wafer_id, note=f"on wafer {label}")
        return {"lot": lot, "fab": fab, "wafers": labels, "dies": wafers * dies_per_wafer}

    def _check_free_label(self, conn: Connection, label: str) -> None:
        if conn.execute(select(s.items.c.id).where(s.items.c.label == label)).first() is not None:
            raise RegistryError(f"{label!r} is already in the register")

    def create_item(self, conn: Connection, kind: str, label: str, *, holder: Any, note: str,
                     custody_kind: str = "create", **fields: Any) -> int:
        now = self._uow.now()
        item_id = self._uow.insert_id(conn,
            insert(s.items).values(
                kind=kind, label=label, holder_id=holder.id, custody_seq=0, status="active", registered_at=now, **fields
            )
        )
        record = custody_record(
            register=self._uow.register_id, label=label, seq=0, kind=custody_kind, from_name=None, to_name=holder.name,
            facility=None, statement=None, note=note, recorded_at=now, prev=GENESIS,
        )
        conn.execute(
            insert(s.custody).values(
                item_id=item_id, seq=0, kind=custody_kind, from_id=None, to_id=holder.id, note=note, recorded_at=now,
                record_digest=record_digest(record),
            )
        )
        return int(item_id)

    # ------------------------------------------------------------------ chips
    def roots(self, conn: Connection) -> dict[str, VerifyKey]:
        rows = conn.execute(select(s.parties).where(s.parties.c.role == "chipmaker")).all()
        return {r.keyid: self._uow.key_of(r) for r in rows}

    def register_chip(self, chip_dir: str | os.PathLike[str], *, fab: str | None = None, die: str | None = None) -> dict[str, Any]:
        """Register the chip whose state directory is `chip_dir`, from its certificate alone.

        The certificate must verify under a registered chipmaker root; that chipmaker becomes
        the chip's first holder. `fab` names the fab of origin; `die` the registered die it was
        packaged from (held by the chipmaker; it leaves circulation as "packaged").
        """
        return self.register_certificate(read_certificate(chip_dir), fab=fab, die=die)

    def register_certificate(self, data: bytes, *, fab: str | None = None, die: str | None = None) -> dict[str, Any]:
        """`register_chip` from the certificate bytes (the chip's `certificate.json`)."""
        with self._uow.write() as conn:
            chip = check_certificate(data, self.roots(conn))
            maker = conn.execute(select(s.parties).where(s.parties.c.keyid == chip.chipmaker_keyid)).one()
            fab_id = self._uow.party_row(conn, fab, ("fab",)).id if fab is not None else None
            self.check_new_chip(conn, chip)
            parent_id = None
            if die is not None:
                die_row = self._uow.item_row(conn, die, lock=True, kind="die")
                if die_row.status != "active" or die_row.holder_id != maker.id:
                    holder = self._uow.name_of(conn, die_row.holder_id)
                    raise RegistryError(
                        f"die {die!r} is {die_row.status} and held by {holder!r}: only an active die held by the "
                        f"chipmaker {maker.name!r} can become its chip"
                    )
                if fab_id is not None and die_row.fab_id != fab_id:
                    raise RegistryError(f"die {die!r} was not made by fab {fab!r}")
                fab_id = die_row.fab_id
                parent_id = die_row.id
                self._uow.append_custody(conn, die_row, "packaged", from_id=maker.id, to_id=maker.id,
                                     note=f"packaged as chip {chip.serial}", item_changes={"status": "packaged"})
            note = f"certified by {maker.name}" + (f", packaged from die {die}" if die else "")
            self.create_item(
                conn, "chip", chip.serial, holder=maker, note=note, parent_id=parent_id, fab_id=fab_id,
                chipmaker_id=maker.id, device_key=chip.device_key, model=chip.model, peak_flops=chip.peak_flops,
                certificate=chip.certificate,
            )
        return self.chip(chip.serial)

    def check_new_chip(self, conn: Connection, chip: CertifiedChip) -> None:
        t = s.items
        row = conn.execute(select(t.c.holder_id).where(t.c.label == chip.serial)).first()
        if row is not None:
            raise RegistryError(f"chip {chip.serial} is already registered (holder {self._uow.name_of(conn, row.holder_id)!r})")
        clone = conn.execute(select(t.c.label).where(t.c.device_key == chip.device_key)).first()
        if clone is not None:
            raise RegistryError(
                f"the device key of chip {chip.serial} is already registered to chip {clone.label}: a cloned identity"
            )

    def register_certificates(
        self,
        certificates: Iterable[bytes],
        *,
        fab: str | None = None,
        batch: int = 10_000,
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Bulk registration: each certificate verified exactly as `register_certificate` does,
        in `workers` processes (default: one per CPU; 0 verifies in this process), then inserted
        in transactions of `batch` chips. Each batch is all or nothing; a bad certificate stops
        the run with an error naming it (earlier batches stay registered). Returns the count."""
        if batch < 1:
            raise RegistryError("batch must be >= 1")
        with self._uow.read() as conn:
            roots = self.roots(conn)
            makers = {r.keyid: r for r in conn.execute(select(s.parties).where(s.parties.c.role == "chipmaker"))}
            fab_id = self._uow.party_row(conn, fab, ("fab",)).id if fab is not None else None
        if not roots:
            raise RegistryError("no chipmaker is registered: add the chipmaker's root key first")
        raw_roots = {k: v.raw for k, v in roots.items()}
        chunks = _chunks(iter(certificates), batch)
        workers = (os.cpu_count() or 1) if workers is None else workers
        done = 0
        if workers == 0:
            checked: Iterator[list[CertifiedChip | str]] = (check_batch(c, raw_roots) for c in chunks)
            for results in checked:
                done = self._insert_checked(results, makers, fab_id, done)
                if progress:
                    progress(done)
            return done
        sub = max(1, batch // (4 * workers))  # several tasks per batch keep every worker busy
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            pending: list[Any] = []
            for chunk in chunks:
                pending.append([pool.submit(check_batch, chunk[i : i + sub], raw_roots) for i in range(0, len(chunk), sub)])
                if len(pending) < 2:  # keep one batch verifying while the previous one inserts
                    continue
                done = self._insert_checked([r for f in pending.pop(0) for r in f.result()], makers, fab_id, done)
                if progress:
                    progress(done)
            for futures in pending:
                done = self._insert_checked([r for f in futures for r in f.result()], makers, fab_id, done)
                if progress:
                    progress(done)
        return done

    def _insert_checked(self, results: list[CertifiedChip | str], makers: dict[str, Any], fab_id: int | None, done: int) -> int:
        for k, r in enumerate(results):
            if isinstance(r, str):
                raise RegistryError(f"certificate {done + k} (0-based) refused: {r}; {done} chips were registered before it")
        chips: list[CertifiedChip] = results  # type: ignore[assignment]
        with self._uow.write() as conn:
            now = self._uow.now()
            ids = conn.execute(
                insert(s.items).returning(s.items.c.id, sort_by_parameter_order=True),
                [
                    {
                        "kind": "chip", "label": c.serial, "parent_id": None, "lot_id": None, "fab_id": fab_id,
                        "chipmaker_id": makers[c.chipmaker_keyid].id, "holder_id": makers[c.chipmaker_keyid].id,
                        "facility_id": None, "custody_seq": 0, "status": "active", "exempt": None,
                        "device_key": c.device_key, "model": c.model, "peak_flops": c.peak_flops,
                        "certificate": c.certificate, "registered_at": now,
                    }
                    for c in chips
                ],
            ).scalars().all()
            rows = []
            for item_id, c in zip(ids, chips, strict=True):
                maker = makers[c.chipmaker_keyid]
                note = f"certified by {maker.name}"
                rec = custody_record(
                    register=self._uow.register_id, label=c.serial, seq=0, kind="create", from_name=None,
                    to_name=maker.name, facility=None, statement=None, note=note, recorded_at=now, prev=GENESIS,
                )
                rows.append({"item_id": item_id, "seq": 0, "kind": "create", "from_id": None, "to_id": maker.id,
                             "facility_id": None, "statement": None, "note": note, "recorded_at": now,
                             "record_digest": record_digest(rec)})
            conn.execute(insert(s.custody), rows)
        return done + len(chips)

    # ------------------------------------------------------------------ reading
    def holder(self, label: str) -> str:
        """The current holder of a chip or other item (for a lost item: its last holder)."""
        with self._uow.read() as conn:
            return str(self._uow.name_of(conn, self._uow.item_row(conn, label).holder_id))

    def chips_of(self, owner: str, *, statuses: tuple[str, ...] = ("active", "damaged")) -> list[str]:
        """Serials of the chips `owner` holds, sorted."""
        t = s.items
        with self._uow.read() as conn:
            party = self._uow.party_row(conn, owner)
            q = select(t.c.label).where(t.c.holder_id == party.id, t.c.kind == "chip", t.c.status.in_(statuses))
            return sorted(conn.execute(q).scalars())

    def chip(self, serial: str) -> dict[str, Any]:
        """Everything the register holds on one chip (or wafer or die): identity, holder,
        custody history, inspections, the witness's tree heads."""
        with self._uow.read() as conn:
            return self._item_doc(conn, self._uow.item_row(conn, serial))

    def _item_doc(self, conn: Connection, row: Any) -> dict[str, Any]:
        holder = self._uow.party_at(conn, row.holder_id)
        parent = None
        if row.parent_id is not None:
            parent = conn.execute(select(s.items.c.label).where(s.items.c.id == row.parent_id)).scalar_one()
        doc: dict[str, Any] = {
            "serial": row.label,
            "kind": row.kind,
            "holder": holder.name,
            "holder_role": holder.role,
            "status": row.status,
            # §6.1: responsibility for a missing item lies with its last holder.
            "responsible": holder.name if row.status in ("lost", "destroyed") else None,
            "facility": self._uow.facility_name(conn, row.facility_id),
            "exempt": row.exempt,
            "fab": self._uow.name_of(conn, row.fab_id),
            "parent": parent,
            "registered_at": row.registered_at,
            "custody_seq": row.custody_seq,
            "custody": [r.to_dict() for r in self.custody_records(conn, row)],
        }
        if row.kind == "chip":
            doc.update(
                chipmaker=self._uow.name_of(conn, row.chipmaker_id),
                device_key=bytes(row.device_key).hex(),
                model=row.model,
                peak_flops=int(row.peak_flops),
                inspections=[i.to_dict() for i in self._svc.inspections.inspection_rows(conn, row.id)],
                tree_heads=[h.to_dict() for h in self._svc.witness.heads_of(conn, row.id)],
                locations=[c.to_dict() for c in self._svc.location.location_rows(conn, row.id)],
            )
        return doc

    def custody_records(self, conn: Connection, item: Any) -> list[CustodyRecord]:
        """The item's custody history, oldest first, in the caller's transaction (`item`: its
        row, or its id)."""
        if isinstance(item, int):
            item = conn.execute(select(s.items).where(s.items.c.id == item)).one()
        rows = self._uow.custody_rows(conn, item)
        name, facility = self._uow.name_of, self._uow.facility_name
        return [
            CustodyRecord(r.seq, r.kind, name(conn, r.from_id), name(conn, r.to_id), facility(conn, r.facility_id),
                          r.statement is not None, r.note, r.recorded_at, r.record_digest)
            for r in rows
        ]

    def lots(self) -> list[FabLot]:
        """The fabs' production lots, in the order they were produced."""
        with self._uow.read() as conn:
            rows = conn.execute(select(s.lots).order_by(s.lots.c.id)).all()
            return [FabLot(r.label, self._uow.name_of(conn, r.fab_id), r.wafers, r.dies_per_wafer, r.produced_at)
                    for r in rows]

    def items(self, *, kind: str | None = "chip", holder: str | None = None, status: str | None = None,
              limit: int | None = None) -> list[ItemListing]:
        """A listing (label, kind, holder, status, exempt, facility), sorted by label."""
        t = s.items
        with self._uow.read() as conn:
            q = select(t.c.label, t.c.kind, t.c.holder_id, t.c.status, t.c.exempt, t.c.facility_id).order_by(t.c.label)
            if kind is not None:
                q = q.where(t.c.kind == kind)
            if holder is not None:
                q = q.where(t.c.holder_id == self._uow.party_row(conn, holder).id)
            if status is not None:
                q = q.where(t.c.status == status)
            if limit is not None:
                q = q.limit(limit)
            names: dict[int, str | None] = {}
            out = []
            for r in conn.execute(q):
                if r.holder_id not in names:
                    names[r.holder_id] = self._uow.name_of(conn, r.holder_id)
                out.append(ItemListing(r.label, r.kind, names[r.holder_id], r.status, r.exempt,
                                       self._uow.facility_name(conn, r.facility_id)))
            return out


def _chunks(it: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk
