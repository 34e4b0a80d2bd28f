"""`Registry`: the chip-owner directory and supply-chain register a Verifier agency runs (§6).

The register is a set of services over one unit of work (`unit.UnitOfWork`: the database, its
transactions, the clock): parties, chips, lots, custody, the witness, inspections, planning,
location and exposure, each one concept (docs/architecture.md, "The register"). `Registry` is
the facade the command line, the service, the Verifier and the tests use: it opens the unit of
work, wires the services together (`Registry.services`) and answers the register's documented
calls (docs/registry.md) as JSON-ready dicts; the services return typed rows where they have them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from computewatch.crypto.signing import SigningKey
from computewatch.registry._chips import ChipService
from computewatch.registry._custody_ops import CustodyService
from computewatch.registry._exposure import ExposureService
from computewatch.registry._inspections import InspectionService
from computewatch.registry._location import LocationService
from computewatch.registry._lots import LotService
from computewatch.registry._parties import PartyService
from computewatch.registry._plans import PlanningService
from computewatch.registry._witness import WitnessService
from computewatch.registry.locating import DEFAULT_MAX_AGE
from computewatch.registry.unit import UnitOfWork

__all__ = ["Registry", "Services"]


@dataclass(init=False)
class Services:
    """The register's services over one unit of work; each reaches the others through this."""

    parties: PartyService
    chips: ChipService
    lots: LotService
    custody: CustodyService
    witness: WitnessService
    inspections: InspectionService
    planning: PlanningService
    location: LocationService
    exposure: ExposureService

    def __init__(self, uow: UnitOfWork) -> None:
        self.parties = PartyService(uow, self)
        self.chips = ChipService(uow, self)
        self.lots = LotService(uow, self)
        self.custody = CustodyService(uow, self)
        self.witness = WitnessService(uow, self)
        self.inspections = InspectionService(uow, self)
        self.planning = PlanningService(uow, self)
        self.location = LocationService(uow, self)
        self.exposure = ExposureService(uow, self)


class Registry:
    """The register over one database (SQLite file or PostgreSQL); `Registry.open(url)`.

    Parties (`add_chipmaker`, `add_owner`, `add_fab`, `party`, `parties`, `owner_key`), chips
    (`produce`, `register_chip`, `register_certificate(s)`, `chip`, `items`, `holder`,
    `chips_of`, `lots`), lots (`register_lot`, `register_lot_chip`), custody (`transfer`, `ship`,
    `report`, `exempt`, `report_found`, `investigations`, `flags`, `verify_custody`,
    `declare_run`, `runs`), the witness (`tree_heads`, `record_tree_head`, `verifier_trust`),
    inspections (`record_inspection`, `refuse`, `inspections`, `verify_inspection`,
    `explanation_queue`, `mark_explained`), planning (`commit_plan`, `plan`, `reveal`,
    `plan_status`), location (`add_landmark`, `set_facility_site`, `locate`, `locations`) and
    exposure (`exposure`). docs/registry.md documents each.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.services = v = Services(uow)
        self.register_id = uow.register_id
        self.now, self.settings, self.set_setting = uow.now, uow.settings, uow.set_setting
        # Services that answer typed rows get the documented dicts from the methods below.
        self.owner_key = v.parties.owner_key
        c = v.chips
        self.produce, self.register_chip, self.register_certificate = c.produce, c.register_chip, c.register_certificate
        self.register_certificates, self.holder, self.chips_of = c.register_certificates, c.holder, c.chips_of
        self.chip = c.chip
        lots = v.lots
        self.register_lot, self.register_lot_chip = lots.register_lot, lots.register_lot_chip
        self.register_lot_chip_dir = lots.register_lot_chip_dir
        k = v.custody
        self.transfer_statement, self.report_statement = k.transfer_statement, k.report_statement
        self.transfer_with_keys, self.ship, self.transfer = k.transfer_with_keys, k.ship, k.transfer
        self.report_with_key, self.report = k.report_with_key, k.report
        self.open_investigation = k.open_investigation
        self.exempt, self.report_found = k.exempt, k.report_found
        self.verify_custody, self.declare_run = k.verify_custody, k.declare_run
        w = v.witness
        self.record_tree_head, self.verifier_trust = w.record_tree_head, w.verifier_trust
        self.mark_explained = v.inspections.mark_explained
        self.plan_parts = v.planning.plan_parts
        self.set_facility_site = v.location.set_facility_site

    @classmethod
    def open(cls, url: str | None = None, *, clock: Callable[[], datetime] | None = None) -> Registry:
        """Open (creating if needed) the register at `url` and migrate it to the newest schema.

        `url`: a SQLite file path or URL, or a postgresql:// URL; default $COMPUTEWATCH_DB, else
        `computewatch.db` in the working directory.
        """
        return cls(UnitOfWork.open(url, clock=clock))

    @property
    def engine(self) -> Engine:
        return self.uow.engine

    @property
    def url(self) -> str:
        return self.uow.url

    def close(self) -> None:
        self.uow.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ parties, as dicts (typed: services.parties)
    def add_party(self, name: str, pub: Any, role: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.services.parties.add_party(name, pub, role, info).to_dict()

    def add_chipmaker(self, name: str, pub: Any) -> dict[str, Any]:
        return self.services.parties.add_chipmaker(name, pub).to_dict()

    def add_owner(self, name: str, pub: Any, role: str = "owner") -> dict[str, Any]:
        return self.services.parties.add_owner(name, pub, role).to_dict()

    def add_fab(self, name: str, pub: Any, *, node_nm: int | None = None, site: str | None = None) -> dict[str, Any]:
        return self.services.parties.add_fab(name, pub, node_nm=node_nm, site=site).to_dict()

    def party(self, name: str) -> dict[str, Any]:
        return self.services.parties.party(name).to_dict()

    def parties(self, role: str | None = None) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.services.parties.parties(role)]

    # ------------------------------------------------------------------ typed rows, as dicts
    def lots(self) -> list[dict[str, Any]]:
        return [lot.to_dict() for lot in self.services.chips.lots()]

    def items(self, *, kind: str | None = "chip", holder: str | None = None, status: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.services.chips.items(kind=kind, holder=holder, status=status, limit=limit)]

    def tree_heads(self, serial: str) -> list[dict[str, Any]]:
        return [h.to_dict() for h in self.services.witness.tree_heads(serial)]

    def investigations(self, party: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.services.custody.investigations(party, status)]

    def flags(self, party: str | None = None) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.services.custody.flags(party)]

    def close_investigation(self, investigation: int, outcome: str) -> dict[str, Any]:
        return self.services.custody.close_investigation(investigation, outcome).to_dict()

    # ------------------------------------------------------------------ inspections, as dicts (typed: services.inspections)
    def record_inspection(self, serial: str, chip_dir: str | os.PathLike[str], *, plan: int | None = None,
                          inspector: str | None = None, inspector_key: SigningKey | None = None,
                          nonce: bytes | None = None) -> dict[str, Any]:
        return self.services.inspections.record_inspection(
            serial, chip_dir, plan=plan, inspector=inspector, inspector_key=inspector_key, nonce=nonce).to_dict()

    def refuse(self, serial: str, reason: str, *, plan: int | None = None, inspector: str | None = None,
               inspector_key: SigningKey | None = None) -> dict[str, Any]:
        return self.services.inspections.refuse(serial, reason, plan=plan, inspector=inspector,
                                                inspector_key=inspector_key).to_dict()

    def inspection(self, inspection_id: int) -> dict[str, Any]:
        return self.services.inspections.inspection(inspection_id).to_dict()

    def inspections(self, *, plan: int | None = None, outcome: str | None = None) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.services.inspections.inspections(plan=plan, outcome=outcome)]

    def verify_inspection(self, inspection_id: int) -> dict[str, Any]:
        return self.services.inspections.verify_inspection(inspection_id).to_dict()

    def explanation_queue(self, owner: str | None = None, status: str | None = "pending") -> list[dict[str, Any]]:
        return [q.to_dict() for q in self.services.inspections.explanation_queue(owner, status)]

    def runs(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.services.custody.runs(owner)]

    # ------------------------------------------------------------------ planning, as dicts (typed: services.planning)
    def commit_plan(self, period: str, owners: Sequence[str] | None = None, *, flops: float,
                    start: datetime | None = None, T: float = 30.0, T_m: float = 30.0, p: float = 0.9,
                    f: float = 0.1, a: float | None = None, formula: str = "exact", group_by_facility: bool = False,
                    seed: bytes | None = None) -> tuple[dict[str, Any], bytes]:
        plan, seed = self.services.planning.commit_plan(
            period, owners, flops=flops, start=start, T=T, T_m=T_m, p=p, f=f, a=a, formula=formula,
            group_by_facility=group_by_facility, seed=seed)
        return plan.to_dict(), seed

    def plans(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.services.planning.plans()]

    def plan(self, plan_id: int, seed: bytes | None = None) -> dict[str, Any]:
        return self.services.planning.plan(plan_id, seed).to_dict()

    def reveal(self, plan_id: int, seed: bytes) -> dict[str, Any]:
        return self.services.planning.reveal(plan_id, seed).to_dict()

    def plan_status(self, plan_id: int, seed: bytes | None = None) -> dict[str, Any]:
        return self.services.planning.plan_status(plan_id, seed).to_dict()

    # ------------------------------------------------------------------ location, as dicts (typed: services.location)
    def add_landmark(self, name: str, pub: Any, latitude: float, longitude: float) -> dict[str, Any]:
        mark = self.services.location.add_landmark(name, pub, latitude, longitude)
        return {"name": mark.name, "role": "landmark", "keyid": mark.keyid, "latitude": mark.latitude,
                "longitude": mark.longitude}

    def landmarks(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.services.location.landmarks()]

    def landmark(self, name: str) -> dict[str, Any]:
        return self.services.location.landmark(name).to_dict()

    def locate(self, serial: str, evidence: bytes, *, radius_km: float | None = None,
               max_age: timedelta = DEFAULT_MAX_AGE) -> dict[str, Any]:
        return self.services.location.locate(serial, evidence, radius_km=radius_km, max_age=max_age).to_dict()

    def locations(self, serial: str) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.services.location.locations(serial)]

    # ------------------------------------------------------------------ exposure, as a dict (typed: services.exposure)
    def exposure(self, period: str | None = None, *, p: float = 0.9) -> dict[str, Any]:
        return self.services.exposure.exposure(period, p=p).to_dict()
