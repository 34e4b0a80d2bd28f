"""Inspections (signed records of what an inspector found on a chip, checked against the
witness) and the queue of logged snapshots owners must explain."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    sign_envelope,
    verify_envelope,
)
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import SigningKey
from computewatch.registry import schema as s
from computewatch.registry.unit import Service
from computewatch.registry._location import location_problems
from computewatch.registry.errors import NotFoundError, RegistryError
from computewatch.registry.inspection_record import PRED_INSPECTION, encode_inspection, parse_inspection
from computewatch.registry.rows import Inspection, InspectionCheck, InspectionResult, QueuedSnapshot, Refusal


__all__ = ["PRED_INSPECTION", "QUEUE_STATUSES", "InspectionService"]

QUEUE_STATUSES = ("pending", "explained", "unexplained")


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class InspectionService(Service):
    # ------------------------------------------------------------------ inspections
    def record_inspection(
        self,
        serial: str,
        chip_dir: str | os.PathLike[str],
        *,
        plan: int | None = None,
        inspector: str | None = None,
        inspector_key: SigningKey | None = None,
        nonce: bytes | None = None,
    ) -> InspectionResult:
        """Inspect the chip presented in `chip_dir` as the requested `serial` (§3.1) and store
        the finding: identity (serial and device key), attestation to a fresh nonce, tamper
        flag, the log's audit against the pinned chipmaker root and against every tree head the
        witness saw. Returns {"serial", "outcome", "problems", "tree_size", "root", ...}; every
        snapshot logged since the last inspection is queued for its owner to explain."""
        # The log audit (formats.chip_audit) loads torch: only inspections pay for it.
        from computewatch.registry.inspection import check, present

        nonce = os.urandom(32) if nonce is None else nonce
        with self._uow.read() as conn:
            item = self._uow.item_row(conn, serial, kind="chip")
            expected = self._svc.witness.expected(conn, item)
            self._check_inspector(conn, inspector, inspector_key)
            if plan is not None:
                self._svc.planning.plan_row(conn, plan)
        presented = present(chip_dir, nonce)  # outside any transaction: the chip takes its time
        with self._uow.write() as conn:
            item = self._uow.item_row(conn, serial, lock=True)
            known = self._svc.witness.known_heads(conn, item.id)
            since = self._last_inspected_size(conn, item.id)
            result = check(expected, presented, known, since)
            # The chip's latest location check (registry._location): a chip last placed outside
            # its declared facility is a finding here too.
            latest = self._svc.location.latest_location(conn, item.id)
            location = None if latest is None else latest.to_dict()
            result.problems += location_problems(location)
            result.outcome = "finding" if result.problems else result.outcome
            predicate = {
                "register": self._uow.register_id,
                "serial": serial,
                "device_key": expected.device_key.hex(),
                "holder": self._uow.name_of(conn, item.holder_id),
                "plan": plan,
                "inspector": inspector,
                "time": self._uow.now(),
                "outcome": result.outcome,
                "problems": result.problems,
                "notes": result.notes,
                "nonce": nonce.hex(),
                "tree_size": result.tree_size,
                "root": result.root,
                "attested": result.attested,
                "known_heads": [h.to_json() for h in known],
                "since": since,
                "evidence_sha256": _sha256(presented.evidence),
                "log_sha256": _sha256(presented.log),
                "boot_error": presented.boot_error,
                "location": None if location is None else {k: location[k] for k in ("id", "recorded_at", "inside", "finding")},
            }
            inspection_id = self._store_inspection(
                conn, item, predicate, inspector, inspector_key, plan=plan, evidence=presented.evidence,
                log=presented.log,
            )
            if result.attested is not None:
                conn.execute(insert(s.tree_heads).values(
                    item_id=item.id, size=result.attested["size"], root=result.attested["root"], source="inspection",
                    inspection_id=inspection_id, evidence=presented.evidence, seen_at=predicate["time"],
                ))
            queued = self._queue(conn, item, inspection_id, result.snapshots)
        return InspectionResult(inspection_id, serial, result.outcome, result.problems, result.notes,
                                result.tree_size, result.root, result.attested, queued)

    def refuse(self, serial: str, reason: str, *, plan: int | None = None, inspector: str | None = None,
               inspector_key: SigningKey | None = None) -> Refusal:
        """Record non-compliance: the owner refused the inspection, or could not present the chip.
        Refusing to comply counts as evidence of a violation (§3)."""
        if not reason.strip():
            raise RegistryError("a refusal needs a reason (what happened at the inspection)")
        with self._uow.write() as conn:
            item = self._uow.item_row(conn, serial, lock=True, kind="chip")
            self._check_inspector(conn, inspector, inspector_key)
            if plan is not None:
                self._svc.planning.plan_row(conn, plan)
            problems = [{"check": "refusal", "entry": None, "problem": reason}]
            predicate = {
                "register": self._uow.register_id, "serial": serial, "device_key": bytes(item.device_key).hex(),
                "holder": self._uow.name_of(conn, item.holder_id), "plan": plan, "inspector": inspector, "time": self._uow.now(),
                "outcome": "refused", "problems": problems, "notes": [], "nonce": None, "tree_size": None,
                "root": None, "attested": None, "known_heads": [], "since": self._last_inspected_size(conn, item.id),
                "evidence_sha256": None, "log_sha256": None, "boot_error": None,
            }
            inspection_id = self._store_inspection(conn, item, predicate, inspector, inspector_key, plan=plan)
        return Refusal(inspection_id, serial, problems)

    def _check_inspector(self, conn: Connection, inspector: str | None, key: SigningKey | None) -> None:
        if inspector is None:
            if key is not None:
                raise RegistryError("an inspector key needs the inspector's name")
            return
        row = self._uow.party_row(conn, inspector, ("inspector",))
        if key is not None and key.public_key.raw != bytes(row.public_key):
            raise RegistryError(f"the key given is not the registered key of inspector {inspector!r}")

    def _store_inspection(self, conn: Connection, item: Any, predicate: dict[str, Any], inspector: str | None,
                          key: SigningKey | None, *, plan: int | None, evidence: bytes | None = None,
                          log: bytes | None = None) -> int:
        subject_digest = {"sha256": predicate["root"] or hashlib.sha256(b"").hexdigest()}
        body = encode_inspection(item.label, subject_digest, predicate)
        env = None if key is None else sign_envelope(PAYLOAD_TYPE_INTOTO, body, key).to_json()
        inspector_id = None if inspector is None else self._uow.party_row(conn, inspector).id
        return int(self._uow.insert_id(conn, insert(s.inspections).values(
            item_id=item.id, plan_id=plan, holder_id=item.holder_id, inspector_id=inspector_id,
            outcome=predicate["outcome"], problems=json.dumps(predicate["problems"]),
            notes=json.dumps(predicate["notes"]), tree_size=predicate["tree_size"], root=predicate["root"],
            statement=body, envelope=env, evidence=evidence, log=None if log is None else zlib.compress(log, 6),
            recorded_at=predicate["time"],
        )))

    def _last_inspected_size(self, conn: Connection, item_id: int) -> int:
        t = s.inspections
        return int(conn.execute(select(func.max(t.c.tree_size)).where(t.c.item_id == item_id)).scalar() or 0)

    def inspection_rows(self, conn: Connection, item_id: int) -> list[Inspection]:
        t = s.inspections
        rows = conn.execute(select(t).where(t.c.item_id == item_id).order_by(t.c.id)).all()
        return [self._inspection(conn, r) for r in rows]

    def _inspection(self, conn: Connection, r: Any, *, with_statement: bool = False) -> Inspection:
        return Inspection(
            r.id, conn.execute(select(s.items.c.label).where(s.items.c.id == r.item_id)).scalar_one(), r.outcome,
            json.loads(r.problems), json.loads(r.notes), r.tree_size, r.root, r.plan_id,
            self._uow.name_of(conn, r.holder_id), self._uow.name_of(conn, r.inspector_id), r.envelope is not None,
            r.recorded_at, parse_inspection(bytes(r.statement)) if with_statement else None,
        )

    def inspection(self, inspection_id: int) -> Inspection:
        """One stored inspection with its statement's body."""
        with self._uow.read() as conn:
            r = conn.execute(select(s.inspections).where(s.inspections.c.id == inspection_id)).first()
            if r is None:
                raise NotFoundError(f"no inspection {inspection_id}")
            return self._inspection(conn, r, with_statement=True)

    def inspections(self, *, plan: int | None = None, outcome: str | None = None) -> list[Inspection]:
        t = s.inspections
        with self._uow.read() as conn:
            q = select(t).order_by(t.c.id)
            if plan is not None:
                q = q.where(t.c.plan_id == plan)
            if outcome is not None:
                q = q.where(t.c.outcome == outcome)
            return [self._inspection(conn, r) for r in conn.execute(q).all()]

    def verify_inspection(self, inspection_id: int) -> InspectionCheck:
        """Re-verify a stored inspection from its stored inputs (evidence, nonce, log, the tree
        heads known then): the same checks must give the same outcome and problems; the stored
        blobs must match the digests in the statement; an inspector's signature must verify."""
        from computewatch.registry.inspection import KnownHead, Presented, check

        problems: list[str] = []
        with self._uow.read() as conn:
            r = conn.execute(select(s.inspections).where(s.inspections.c.id == inspection_id)).first()
            if r is None:
                raise NotFoundError(f"no inspection {inspection_id}")
            item = conn.execute(select(s.items).where(s.items.c.id == r.item_id)).one()
            expected = self._svc.witness.expected(conn, item)
            inspector = self._uow.party_by_id(conn, r.inspector_id)
        stmt = parse_inspection(bytes(r.statement))
        p = stmt["predicate"]
        if r.envelope is not None:
            try:
                env = Envelope.from_json(bytes(r.envelope))
                if env.payload != bytes(r.statement):
                    problems.append("the inspector's envelope signs another statement")
                if inspector is None:
                    problems.append("the inspection is signed but names no registered inspector")
                else:
                    verify_envelope(env, [self._uow.key_of(inspector)])
            except ComputewatchError as exc:
                problems.append(f"inspector signature: {exc}")
        if r.outcome != p["outcome"] or json.loads(r.problems) != p["problems"]:
            problems.append("the stored outcome differs from the statement")
        if p["outcome"] != "refused":
            try:
                log = zlib.decompress(bytes(r.log))
            except (zlib.error, TypeError):
                return InspectionCheck(inspection_id, False, r.outcome, [*problems, "the stored log is corrupt"])
            evidence = None if r.evidence is None else bytes(r.evidence)
            if _sha256(log) != p["log_sha256"] or _sha256(evidence) != p["evidence_sha256"]:
                problems.append("the stored log or evidence does not match the statement's digests")
            known = [KnownHead(h["size"], h["root"], h["seen_at"], h["source"]) for h in p["known_heads"]]
            presented = Presented(bytes.fromhex(p["nonce"]), evidence, log, p["boot_error"])
            again = check(expected, presented, known, p["since"])
            again.problems += location_problems(p.get("location"))
            again.outcome = "finding" if again.problems else again.outcome
            if (again.outcome, again.problems, again.tree_size, again.root) != (
                p["outcome"], p["problems"], p["tree_size"], p["root"]
            ):
                problems.append("re-running the checks gives another result")
        return InspectionCheck(inspection_id, not problems, r.outcome, problems)

    # ------------------------------------------------------------------ explanation queue
    def _queue(self, conn: Connection, item: Any, inspection_id: int, snapshots: list[dict[str, Any]]) -> int:
        t = s.explanations
        have = {(r.counter, r.shard_digest) for r in conn.execute(
            select(t.c.counter, t.c.shard_digest).where(t.c.item_id == item.id))}
        now = self._uow.now()
        rows = [
            {"item_id": item.id, "counter": snap["counter"], "step": snap["step"], "shard_digest": snap["shard_digest"],
             "owner_id": item.holder_id, "inspection_id": inspection_id, "status": "pending", "verdict_ref": None,
             "updated_at": now}
            for snap in snapshots if (snap["counter"], snap["shard_digest"]) not in have
        ]
        if rows:
            conn.execute(insert(t), rows)
        return len(rows)

    def explanation_queue(self, owner: str | None = None, status: str | None = "pending") -> list[QueuedSnapshot]:
        """Logged snapshots the owner must explain with a transcript (the Verifier consumes this):
        [{serial, counter, step, shard_digest, owner, inspection, status, verdict_ref}]."""
        if status is not None and status not in QUEUE_STATUSES:
            raise RegistryError(f"status must be one of {', '.join(QUEUE_STATUSES)}")
        t, i = s.explanations, s.items
        with self._uow.read() as conn:
            q = select(t, i.c.label).join(i, i.c.id == t.c.item_id).order_by(i.c.label, t.c.counter)
            if owner is not None:
                q = q.where(t.c.owner_id == self._uow.party_row(conn, owner).id)
            if status is not None:
                q = q.where(t.c.status == status)
            names: dict[int, str | None] = {}
            out: list[QueuedSnapshot] = []
            for r in conn.execute(q).all():
                if r.owner_id not in names:
                    names[r.owner_id] = self._uow.name_of(conn, r.owner_id)
                out.append(QueuedSnapshot(r.label, r.counter, r.step, r.shard_digest, names[r.owner_id],
                                          r.inspection_id, r.status, r.verdict_ref))
            return out

    def mark_explained(self, serial: str, counter: int, verdict_ref: str, *, status: str = "explained",
                       shard_digest: str | None = None) -> int:
        """Close queue entries (the Verifier's verdict on a snapshot); returns how many changed."""
        if status not in ("explained", "unexplained"):
            raise RegistryError("a verdict marks a snapshot 'explained' or 'unexplained'")
        t = s.explanations
        with self._uow.write() as conn:
            item = self._uow.item_row(conn, serial, kind="chip")
            where = [t.c.item_id == item.id, t.c.counter == counter]
            if shard_digest is not None:
                where.append(t.c.shard_digest == shard_digest)
            done = conn.execute(update(t).where(*where).values(status=status, verdict_ref=verdict_ref,
                                                               updated_at=self._uow.now())).rowcount
            if done == 0:
                raise NotFoundError(f"no queued snapshot at entry {counter} of chip {serial}")
            return int(done)
