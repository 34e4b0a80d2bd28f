"""The witness: every chip log tree head the register has seen, and what a Verifier pins from it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select

from computewatch.crypto.errors import ComputewatchError
from computewatch.formats.attestation import verify_attestation
from computewatch.formats.chip_entry import envelope_from_obj, from_hex
from computewatch.formats.identity import verify_chip_certificate
from computewatch.registry import schema as s
from computewatch.registry.rows import TreeHead
from computewatch.registry.unit import Service
from computewatch.registry.errors import RegistryError

if TYPE_CHECKING:
    from computewatch.registry.inspection import Expected, KnownHead

__all__ = ["WitnessService"]

class WitnessService(Service):
    # ------------------------------------------------------------------ tree heads
    def tree_heads(self, serial: str) -> list[TreeHead]:
        """Every signed tree head the register has seen for the chip, oldest first."""
        with self._uow.read() as conn:
            return self.heads_of(conn, self._uow.item_row(conn, serial, kind="chip").id)

    def heads_of(self, conn: Connection, item_id: int) -> list[TreeHead]:
        """The chip's witnessed tree heads, oldest first, in the caller's transaction."""
        t = s.tree_heads
        rows = conn.execute(select(t).where(t.c.item_id == item_id).order_by(t.c.id)).all()
        return [TreeHead(r.size, r.root, r.source, r.seen_at, r.inspection_id) for r in rows]

    def known_heads(self, conn: Connection, item_id: int) -> list[KnownHead]:
        from computewatch.registry.inspection import KnownHead

        return [KnownHead(h.size, h.root, h.seen_at, h.source) for h in self.heads_of(conn, item_id)]

    def expected(self, conn: Connection, item: Any) -> Expected:
        from computewatch.registry.inspection import Expected

        maker = self._uow.party_at(conn, item.chipmaker_id)
        return Expected(item.label, bytes(item.device_key), bytes(item.certificate), self._uow.key_of(maker))

    def record_tree_head(self, serial: str, evidence: bytes, nonce: bytes | None = None) -> dict[str, Any]:
        """Keep the log head of attestation evidence (e.g. handed over with a run's records).

        The evidence must verify under the chip's pinned chipmaker root and name the registered
        device key; `nonce` is checked when given (a head needs no freshness: an old head is
        exactly what the log must still extend). A head smaller than one seen before, or of the
        same size with another root, is a problem (the log went backwards or forked) and flags
        the holder; it is kept either way, as signed evidence."""
        with self._uow.read() as conn:
            item = self._uow.item_row(conn, serial, kind="chip")
            expected = self.expected(conn, item)
        try:
            doc = json.loads(evidence)
            claimed = from_hex(json.loads(envelope_from_obj(doc["evidence"], "evidence").payload)["predicate"]["nonce"], "nonce")
            claims = verify_attestation(evidence, claimed if nonce is None else nonce, expected.root)
            cert = verify_chip_certificate(envelope_from_obj(doc["certificate"], "certificate"), expected.root)
        except (ComputewatchError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"attestation evidence for {serial} refused: {exc}") from None
        if claims.serial != serial or cert.device_key.raw != expected.device_key:
            raise RegistryError(f"the evidence is from chip {claims.serial} with another device key, not {serial}")
        root = claims.log_root.hex()
        with self._uow.write() as conn:
            item = self._uow.item_row(conn, serial, lock=True)
            problems = []
            for h in self.known_heads(conn, item.id):
                if h.size > claims.log_size:
                    problems.append(f"tree head went backwards: size {claims.log_size} after size {h.size} seen {h.seen_at}")
                elif h.size == claims.log_size and h.root != root:
                    problems.append(f"fork: two different logs of size {h.size} (the other seen {h.seen_at})")
            # The chip's own report (tamper flag, log damage such as a restored folder or a twin
            # found by its root-of-trust counter) flags the holder now, not at the next inspection.
            problems += [f"the chip reports: {c}" for c in claims.concerns]
            conn.execute(insert(s.tree_heads).values(item_id=item.id, size=claims.log_size, root=root,
                                                      source="attestation", evidence=evidence, seen_at=self._uow.now()))
            for problem in problems:
                self._svc.custody.flag(conn, serial, item.id, item.holder_id, "witness", problem)
        return {"serial": serial, "size": claims.log_size, "root": root, "problems": problems}

    # ------------------------------------------------------------------ the Verifier's pins
    def verifier_trust(self) -> dict[str, Any]:
        """What a Verifier pins from the register: every registered owner's key (a manifest must be
        signed by one of them), every chipmaker root, and every tree head witnessed per chip
        (serial -> [(size, root bytes)], oldest first) so a rolled-back log is caught."""
        with self._uow.read() as conn:
            parties = conn.execute(select(s.parties)).all()
            heads: dict[str, list[tuple[int, bytes]]] = {}
            t, i = s.tree_heads, s.items
            rows = conn.execute(select(i.c.label, t.c.size, t.c.root).join(i, i.c.id == t.c.item_id).order_by(t.c.id)).all()
            for label, size, root in rows:
                heads.setdefault(label, []).append((int(size), bytes.fromhex(root)))
        return {
            "prover_keys": [self._uow.key_of(p) for p in parties if p.role == "owner"],
            "chipmaker_roots": [self._uow.key_of(p) for p in parties if p.role == "chipmaker"],
            "known_heads": heads,
        }
