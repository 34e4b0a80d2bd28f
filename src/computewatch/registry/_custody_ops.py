"""Custody changes: signed transfers, loss/damage/destruction reports, exemptions, chips that
turn up where the register does not expect them, investigations (footnote 22)."""

from __future__ import annotations

import json
import os
from typing import Any

from sqlalchemy import Connection, insert, select, update

from computewatch.crypto.dsse import Envelope
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.registry import schema as s
from computewatch.registry.rows import DeclaredRun, Flag, Investigation
from computewatch.registry.unit import Service, pause_point
from computewatch.registry.certificates import check_certificate, read_certificate
from computewatch.registry.custody import (
    GENESIS,
    CustodyStatement,
    countersign,
    custody_record,
    item_subject,
    parse_statement,
    record_digest,
    report_statement,
    require_signature,
    sign_statement,
    transfer_statement,
)
from computewatch.registry.errors import (
    ConflictError,
    CustodyError,
    NotFoundError,
    RegistryError,
)

__all__ = ["EXEMPTION_CATEGORIES", "CustodyService"]

EXEMPTION_CATEGORIES = ("education", "research", "individual")
_IN_SERVICE = ("active", "damaged")


class CustodyService(Service):
    # ------------------------------------------------------------------ statements to sign
    def _subject(self, row: Any) -> tuple[str, dict[str, str]]:
        keyid = VerifyKey.from_raw(bytes(row.device_key)).keyid if row.kind == "chip" else None
        return item_subject(row.kind, row.label, keyid)

    def transfer_statement(self, label: str, to: str, *, facility: str | None = None) -> dict[str, Any]:
        """The statement the holder and `to` sign to move `label` (its next sequence number)."""
        with self._uow.read() as conn:
            item = self._uow.item_row(conn, label)
            giver = self._uow.party_at(conn, item.holder_id)
            receiver = self._uow.party_row(conn, to)
            return transfer_statement(
                register=self._uow.register_id,
                subject=self._subject(item),
                seq=item.custody_seq + 1,
                giver=(giver.name, self._uow.key_of(giver)),
                receiver=(receiver.name, self._uow.key_of(receiver)),
                facility=facility,
                time=self._uow.now(),
            )

    def report_statement(self, label: str, report: str, *, reason: str = "") -> dict[str, Any]:
        """The statement the holder signs to report `label` lost, damaged or destroyed."""
        with self._uow.read() as conn:
            item = self._uow.item_row(conn, label)
            holder = self._uow.party_at(conn, item.holder_id)
            return report_statement(
                register=self._uow.register_id,
                subject=self._subject(item),
                seq=item.custody_seq + 1,
                holder=(holder.name, self._uow.key_of(holder)),
                report=report,
                reason=reason,
                time=self._uow.now(),
            )

    # ------------------------------------------------------------------ transfers
    def transfer_with_keys(
        self, label: str, to: str, from_key: SigningKey, to_key: SigningKey, *, facility: str | None = None
    ) -> dict[str, Any]:
        """Convenience: build the transfer statement, sign it with `from_key`, countersign it with
        `to_key` and submit it. The register still checks both keys against its own records."""
        env = countersign(sign_statement(self.transfer_statement(label, to, facility=facility), from_key), to_key)
        return self.transfer(env)

    def ship(self, label: str, to: str, from_key: SigningKey, to_key: SigningKey, *, facility: str | None = None) -> dict[str, Any]:
        """The chipmaker's first transfer of a chip (to its first owner)."""
        with self._uow.read() as conn:
            item = self._uow.item_row(conn, label)
            holder = self._uow.party_at(conn, item.holder_id)
        if holder.role != "chipmaker" or item.custody_seq != 0:
            raise CustodyError(f"{label} was already shipped: it is held by {holder.name!r}; use transfer")
        return self.transfer_with_keys(label, to, from_key, to_key, facility=facility)

    def transfer(self, envelope: Envelope | bytes) -> dict[str, Any]:
        """Apply a signed transfer: signed by the current holder, countersigned by the receiver,
        naming this register and the item's next custody sequence number. All or nothing."""
        st = parse_statement(envelope)
        if st.kind != "transfer":
            raise CustodyError("a loss, damage or destruction report is submitted with report(), not transfer()")
        self._check_register(st)
        p = st.predicate
        try:
            with self._uow.write() as conn:
                item = self._locked_item(conn, st)
                giver = self._uow.party_at(conn, item.holder_id)
                if p["from"]["name"] != giver.name or p["from"]["keyid"] != giver.keyid:
                    raise CustodyError(f"{st.label} is held by {giver.name!r}, not by {p['from']['name']!r}")
                require_signature(st.envelope, self._uow.key_of(giver), f"the current holder {giver.name!r}")
                receiver = self._uow.party_row(conn, p["to"]["name"])
                if receiver.role == "inspector":
                    raise CustodyError(f"{receiver.name!r} is an inspector: inspectors examine chips, they do not hold them")
                if receiver.id == giver.id:
                    raise CustodyError(f"{st.label} is already held by {giver.name!r}")
                if p["to"]["keyid"] != receiver.keyid:
                    raise CustodyError(f"the statement names a key for {receiver.name!r} that is not its registered key")
                require_signature(st.envelope, self._uow.key_of(receiver), f"the receiver {receiver.name!r}")
                facility = self._uow.facility_row(conn, receiver.id, p["facility"])
                fid = None if facility is None else facility.id
                stmt_bytes = st.envelope.to_json()
                out = self._uow.append_custody(
                    conn, item, "transfer", from_id=giver.id, to_id=receiver.id, facility_id=fid,
                    statement=stmt_bytes, note="", item_changes={"holder_id": receiver.id, "facility_id": fid},
                )
                if item.kind == "wafer":  # a wafer travels with the dies on it
                    carried = conn.execute(
                        select(s.items).where(s.items.c.parent_id == item.id, s.items.c.status == "active",
                                              s.items.c.holder_id == giver.id).with_for_update()
                    ).all()
                    for die in carried:
                        self._uow.append_custody(
                            conn, die, "carried", from_id=giver.id, to_id=receiver.id, facility_id=fid,
                            statement=stmt_bytes, note=f"on wafer {item.label}",
                            item_changes={"holder_id": receiver.id, "facility_id": fid},
                        )
                    out["carried"] = len(carried)
                pause_point("transfer")
        except ConflictError as exc:
            raise ConflictError(f"transfer of {st.label} refused: {exc}") from None
        except CustodyError as exc:
            raise CustodyError(f"transfer of {st.label} refused: {exc}") from None
        out.update({"from": giver.name, "to": receiver.name, "facility": p["facility"]})
        return out

    def _check_register(self, st: CustodyStatement) -> None:
        if st.register != self._uow.register_id:
            raise CustodyError(
                f"custody statement for {st.label} names register {st.register}, not this register ({self._uow.register_id}): "
                "a statement signed for another register"
            )

    def _locked_item(self, conn: Connection, st: CustodyStatement) -> Any:
        """The statement's item, row-locked, after the subject and sequence checks."""
        item = self._uow.item_row(conn, st.label, lock=True)
        if item.kind != st.item_kind or self._subject(item)[1] != st.subject_digest:
            raise CustodyError(f"the statement's subject {st.subject} does not match the registered {item.kind} {item.label}")
        if item.status not in _IN_SERVICE:
            raise CustodyError(f"{item.label} is {item.status}: it cannot change hands")
        want = item.custody_seq + 1
        if st.seq < want:
            raise ConflictError(
                f"custody sequence {st.seq} of {item.label} is already used (the item's custody is at {item.custody_seq}): "
                "a replayed or stale statement, or another change committed first"
            )
        if st.seq > want:
            raise CustodyError(f"the statement claims custody sequence {st.seq}, but the next one for {item.label} is {want}")
        return item

    # ------------------------------------------------------------------ loss, damage, destruction
    def report_with_key(self, label: str, report: str, key: SigningKey, *, reason: str = "") -> dict[str, Any]:
        """Convenience: the holder signs a loss, damage or destruction report with `key` and submits it."""
        return self.report(sign_statement(self.report_statement(label, report, reason=reason), key))

    def report(self, envelope: Envelope | bytes) -> dict[str, Any]:
        """Apply the holder's signed report. The holder stays recorded (responsible for a missing
        item); chips reported lost or destroyed count toward an investigation of that holder."""
        st = parse_statement(envelope)
        if st.kind != "report":
            raise CustodyError("a transfer is submitted with transfer(), not report()")
        self._check_register(st)
        p = st.predicate
        investigation = None
        try:
            with self._uow.write() as conn:
                item = self._locked_item(conn, st)
                # Lock the holder too: two reports racing must count each other's losses.
                holder = self._uow.party_row(conn, self._uow.name_of(conn, item.holder_id) or "", lock=True)
                if p["holder"]["name"] != holder.name or p["holder"]["keyid"] != holder.keyid:
                    raise CustodyError(f"{st.label} is held by {holder.name!r}, not by {p['holder']['name']!r}")
                require_signature(st.envelope, self._uow.key_of(holder), f"the holder {holder.name!r}")
                if p["report"] == "damaged" and item.status == "damaged":
                    raise CustodyError(f"{st.label} is already reported damaged")
                out = self._uow.append_custody(
                    conn, item, p["report"], from_id=holder.id, to_id=holder.id, facility_id=item.facility_id,
                    statement=st.envelope.to_json(), note=p["reason"], item_changes={"status": p["report"]},
                )
                if p["report"] in ("lost", "destroyed"):
                    investigation = self._check_losses(conn, holder)
        except ConflictError as exc:
            raise ConflictError(f"report on {st.label} refused: {exc}") from None
        except CustodyError as exc:
            raise CustodyError(f"report on {st.label} refused: {exc}") from None
        out.update({"holder": holder.name, "report": p["report"], "investigation": investigation})
        return out

    def _check_losses(self, conn: Connection, holder: Any) -> int | None:
        """Footnote 22: many chips of one holder reported lost or destroyed open an investigation."""
        c = s.custody
        losses = self._uow.count(conn, c, c.c.kind.in_(("lost", "destroyed")), c.c.from_id == holder.id)
        threshold = self._uow.settings_in(conn)["loss_investigation_threshold"]
        open_id = self._open_investigation(conn, holder.id)
        if open_id is None and losses >= threshold:
            reason = (
                f"{losses} items reported lost or destroyed by {holder.name} (threshold {threshold}): "
                "is the holder hiding chips from oversight? (footnote 22)"
            )
            open_id = int(
                self._uow.insert_id(conn,
                    insert(s.investigations).values(
                        party_id=holder.id, reason=reason, status="open", opened_at=self._uow.now()
                    )
                )
            )
        return open_id

    def _open_investigation(self, conn: Connection, party_id: int) -> int | None:
        t = s.investigations
        q = select(t.c.id).where(t.c.party_id == party_id, t.c.status == "open").order_by(t.c.id)
        return conn.execute(q).scalars().first()

    def open_investigation(self, party: str, reason: str) -> int:
        """Open an investigation of `party` by hand (the Verifier's decision)."""
        with self._uow.write() as conn:
            row = self._uow.party_row(conn, party, lock=True)
            found = self._open_investigation(conn, row.id)
            if found is not None:
                return found
            t = s.investigations
            return int(
                self._uow.insert_id(conn,
                    insert(t).values(party_id=row.id, reason=reason, status="open", opened_at=self._uow.now())
                )
            )

    def close_investigation(self, investigation: int, outcome: str) -> Investigation:
        t = s.investigations
        with self._uow.write() as conn:
            row = conn.execute(select(t).where(t.c.id == investigation).with_for_update()).first()
            if row is None:
                raise NotFoundError(f"no investigation {investigation}")
            if row.status != "open":
                raise RegistryError(f"investigation {investigation} is already closed")
            conn.execute(update(t).where(t.c.id == investigation).values(status="closed", closed_at=self._uow.now(), outcome=outcome))
        return next(i for i in self.investigations() if i.id == investigation)

    def investigations(self, party: str | None = None, status: str | None = None) -> list[Investigation]:
        t = s.investigations
        with self._uow.read() as conn:
            q = select(t).order_by(t.c.id)
            if party is not None:
                q = q.where(t.c.party_id == self._uow.party_row(conn, party).id)
            if status is not None:
                q = q.where(t.c.status == status)
            out = []
            for r in conn.execute(q).all():
                f = s.flags
                flagged = conn.execute(select(f.c.label).where(f.c.investigation_id == r.id).order_by(f.c.id)).scalars().all()
                out.append(Investigation(r.id, self._uow.name_of(conn, r.party_id), r.reason, r.status, r.opened_at,
                                         r.closed_at, r.outcome, list(flagged)))
            return out

    # ------------------------------------------------------------------ exemptions
    def exempt(self, label: str, category: str, *, reason: str = "", revoke: bool = False) -> dict[str, Any]:
        """Grant (or revoke) an exemption from inspection sampling: education and research chips,
        small individual purchases (§6.1). The Verifier decides; the register records it."""
        if category not in EXEMPTION_CATEGORIES:
            raise RegistryError(f"exemption category must be one of {', '.join(EXEMPTION_CATEGORIES)}, got {category!r}")
        with self._uow.write() as conn:
            item = self._uow.item_row(conn, label, lock=True, kind="chip")
            if revoke:
                if item.exempt != category:
                    raise RegistryError(f"{label} holds no {category} exemption to revoke (exempt: {item.exempt})")
            else:
                if item.exempt is not None:
                    raise RegistryError(f"{label} is already exempt ({item.exempt}); revoke that first")
                if item.status not in _IN_SERVICE:
                    raise RegistryError(f"{label} is {item.status}: there is nothing to exempt")
                if category == "individual":
                    self._check_individual(conn, item)
            conn.execute(
                insert(s.exemptions).values(
                    item_id=item.id, action="revoke" if revoke else "grant", category=category, reason=reason,
                    recorded_at=self._uow.now(),
                )
            )
            conn.execute(update(s.items).where(s.items.c.id == item.id).values(exempt=None if revoke else category))
        return {"serial": label, "exempt": None if revoke else category, "action": "revoke" if revoke else "grant"}

    def _check_individual(self, conn: Connection, item: Any) -> None:
        holder = self._uow.party_at(conn, item.holder_id)
        limit = self._uow.settings_in(conn)["individual_exemption_max"]
        t = s.items
        held = self._uow.count(conn, t, t.c.holder_id == holder.id, t.c.kind == "chip", t.c.status.in_(_IN_SERVICE))
        if holder.role != "owner" or held > limit:
            raise RegistryError(
                f"an individual exemption covers small purchases: {holder.name!r} ({holder.role}) holds {held} chips, "
                f"more than {limit}"
            )

    # ------------------------------------------------------------------ chips that turn up
    def report_found(self, label: str, at: str, *, chip_dir: str | os.PathLike[str] | None = None,
                     note: str = "") -> dict[str, Any]:
        """A chip turned up at party `at` (an inspection of a facility, a run's chip list).

        If the register agrees that `at` holds it, nothing is flagged. Otherwise the chip is
        flagged: unknown to the register (registered now from its certificate, when `chip_dir`
        is given, with no custody trail), reported lost or destroyed, or held by someone else;
        responsibility lies with its last holder (or the chipmaker that certified it and never
        registered it). The custody record moves it to `at`, where it physically is."""
        with self._uow.write() as conn:
            finder = self._uow.party_row(conn, at)
            try:
                item = self._uow.item_row(conn, label, lock=True)
            except NotFoundError:
                item = None
            if item is None:
                return self._found_unknown(conn, label, finder, chip_dir, note)
            holder = self._uow.party_at(conn, item.holder_id)
            if holder.id == finder.id and item.status in _IN_SERVICE:
                return {"serial": label, "holder": holder.name, "flag": None}
            if item.status in ("lost", "destroyed"):
                kind, detail = "reported-" + item.status, f"reported {item.status} by {holder.name}, turned up at {at}"
            elif item.status == "packaged":
                kind, detail = "packaged-die", f"die {label} was packaged into a chip, yet turned up at {at}"
            else:
                kind, detail = "custody-mismatch", f"held by {holder.name} per the register, turned up at {at}: no custody trail"
            self._uow.append_custody(
                conn, item, "found", from_id=holder.id, to_id=finder.id, note=(note or detail),
                item_changes={"holder_id": finder.id, "status": "active", "facility_id": None},
            )
            flag = self.flag(conn, label, item.id, holder.id, kind, detail + (f" ({note})" if note else ""))
            return {"serial": label, "holder": at, "flag": flag}

    def _found_unknown(self, conn: Connection, label: str, finder: Any, chip_dir: Any, note: str) -> dict[str, Any]:
        if chip_dir is None:
            flag = self.flag(conn, label, None, finder.id, "unregistered", f"unregistered serial {label} turned up at {finder.name}")
            return {"serial": label, "holder": None, "flag": flag}
        chip = check_certificate(read_certificate(chip_dir), self._svc.chips.roots(conn))
        if chip.serial != label:
            raise RegistryError(f"the chip in {os.fspath(chip_dir)!r} is {chip.serial}, not {label}")
        self._svc.chips.check_new_chip(conn, chip)
        maker = conn.execute(select(s.parties).where(s.parties.c.keyid == chip.chipmaker_keyid)).one()
        detail = f"chip {label}, certified by {maker.name}, turned up at {finder.name} with no custody trail"
        self._svc.chips.create_item(
            conn, "chip", label, holder=finder, note=note or detail, custody_kind="found", chipmaker_id=maker.id,
            device_key=chip.device_key, model=chip.model, peak_flops=chip.peak_flops, certificate=chip.certificate,
        )
        item_id = conn.execute(select(s.items.c.id).where(s.items.c.label == label)).scalar_one()
        flag = self.flag(conn, label, item_id, maker.id, "no-custody-trail", detail)
        return {"serial": label, "holder": finder.name, "flag": flag}

    def flag(self, conn: Connection, label: str, item_id: int | None, party_id: int, kind: str, detail: str) -> dict[str, Any]:
        inv = self._open_investigation(conn, party_id)
        conn.execute(
            insert(s.flags).values(label=label, item_id=item_id, party_id=party_id, kind=kind, detail=detail,
                                   investigation_id=inv, created_at=self._uow.now())
        )
        return {"kind": kind, "detail": detail, "responsible": self._uow.name_of(conn, party_id), "investigation": inv}

    def flags(self, party: str | None = None) -> list[Flag]:
        t = s.flags
        with self._uow.read() as conn:
            q = select(t).order_by(t.c.id)
            if party is not None:
                q = q.where(t.c.party_id == self._uow.party_row(conn, party).id)
            return [
                Flag(r.id, r.label, r.kind, r.detail, self._uow.name_of(conn, r.party_id), r.investigation_id,
                     r.created_at)
                for r in conn.execute(q).all()
            ]

    # ------------------------------------------------------------------ re-verification
    def verify_custody(self, label: str) -> dict[str, Any]:
        """Re-check an item's whole custody history: sequence numbers, the record hash chain,
        and every stored statement's signatures against the registered keys."""
        problems: list[str] = []
        with self._uow.read() as conn:
            item = self._uow.item_row(conn, label)
            rows = self._uow.custody_rows(conn, item)
            prev, holder = GENESIS, None
            for k, r in enumerate(rows):
                names = (self._uow.name_of(conn, r.from_id), self._uow.name_of(conn, r.to_id))
                rec = custody_record(
                    register=self._uow.register_id, label=label, seq=r.seq, kind=r.kind, from_name=names[0],
                    to_name=names[1], facility=self._uow.facility_name(conn, r.facility_id),
                    statement=None if r.statement is None else bytes(r.statement), note=r.note,
                    recorded_at=r.recorded_at, prev=prev,
                )
                prev = record_digest(rec)
                if r.record_digest != prev:
                    problems.append(f"record {r.seq}: digest does not match its content and the chain before it")
                if r.seq != k:
                    problems.append(f"record {r.seq}: sequence numbers are not contiguous")
                if r.statement is not None and r.kind in ("transfer", "lost", "damaged", "destroyed"):
                    problems.extend(self._recheck_statement(conn, r, label))
                if r.kind != "carried" and holder is not None and r.from_id not in (None, holder):
                    problems.append(f"record {r.seq}: given by a party that did not hold the item")
                holder = r.to_id if r.to_id is not None else holder
            if holder != item.holder_id:
                problems.append("the cached holder differs from the custody history")
        return {"serial": label, "ok": not problems, "records": len(rows), "head": prev, "problems": problems}

    def _recheck_statement(self, conn: Connection, r: Any, label: str) -> list[str]:
        try:
            st = parse_statement(bytes(r.statement))
            self._check_register(st)
            if st.seq != r.seq or st.label != label:
                return [f"record {r.seq}: its statement is for {st.subject} sequence {st.seq}"]
            signers = [r.from_id] + ([r.to_id] if r.kind == "transfer" else [])
            for pid in signers:
                party = self._uow.party_at(conn, pid)
                require_signature(st.envelope, self._uow.key_of(party), party.name)
        except CustodyError as exc:
            return [f"record {r.seq}: {exc}"]
        return []

    # ------------------------------------------------------------------ declared runs
    def declare_run(self, owner: str, run_id: str, serials: list[str], *, precommitment: str | None = None) -> dict[str, Any]:
        """An owner declares a training run and the chips it uses (each must be held by the owner)."""
        if not run_id or not serials:
            raise RegistryError("a declared run needs a run id and at least one chip")
        with self._uow.write() as conn:
            party = self._uow.party_row(conn, owner, ("owner",))
            for serial in serials:
                item = self._uow.item_row(conn, serial, kind="chip")
                if item.holder_id != party.id:
                    raise RegistryError(f"chip {serial} is held by {self._uow.name_of(conn, item.holder_id)!r}, not {owner!r}")
            t = s.declared_runs
            held = conn.execute(select(t.c.owner_id).where(t.c.run_id == run_id)).first()
            if held is not None and held.owner_id == party.id:
                raise RegistryError(f"{owner!r} already declared run {run_id!r}")
            if held is not None:
                # A run id names one run of one owner: otherwise a second owner could declare A's
                # (approved) run id and be mistaken for A's run (issue 18, identity binding).
                raise RegistryError(f"run id {run_id!r} is already held by {self._uow.name_of(conn, held.owner_id)!r}; choose another run id")
            conn.execute(insert(t).values(owner_id=party.id, run_id=run_id, precommitment=precommitment,
                                          chips=json.dumps(sorted(serials)), declared_at=self._uow.now()))
        return {"owner": owner, "run_id": run_id, "chips": sorted(serials), "precommitment": precommitment}

    def runs(self, owner: str | None = None) -> list[DeclaredRun]:
        t = s.declared_runs
        with self._uow.read() as conn:
            q = select(t).order_by(t.c.id)
            if owner is not None:
                q = q.where(t.c.owner_id == self._uow.party_row(conn, owner).id)
            return [DeclaredRun(self._uow.name_of(conn, r.owner_id), r.run_id, json.loads(r.chips), r.precommitment,
                                r.declared_at) for r in conn.execute(q).all()]
