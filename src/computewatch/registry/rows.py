"""Typed rows the register's services return (docs/registry.md gives each as a dict: `to_dict`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from computewatch.analysis.exposure import Exposure

__all__ = [
    "CustodyRecord",
    "DeclaredRun",
    "ExposureReport",
    "ExposureSetting",
    "FabLot",
    "Flag",
    "Inspection",
    "InspectionCheck",
    "InspectionResult",
    "Investigation",
    "ItemListing",
    "LocationCheck",
    "OwnerExposure",
    "Plan",
    "PlanStatus",
    "PlannedChip",
    "QueuedSnapshot",
    "Refusal",
    "RegisteredLandmark",
    "TreeHead",
    "Visit",
]


@dataclass(frozen=True)
class CustodyRecord:
    """One record of an item's custody history (its hash chain link is `record_digest`)."""

    seq: int
    kind: str
    from_party: str | None
    to_party: str | None
    facility: str | None
    signed: bool  # the record keeps a signed custody statement
    note: str
    recorded_at: str
    record_digest: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "from": self.from_party, "to": self.to_party,
                "facility": self.facility, "signed": self.signed, "note": self.note,
                "recorded_at": self.recorded_at, "record_digest": self.record_digest}


@dataclass(frozen=True)
class FabLot:
    """A fab's production lot (wafers and their dies), as `produce` recorded it."""

    lot: str
    fab: str | None
    wafers: int
    dies_per_wafer: int
    produced_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ItemListing:
    """One line of a listing of items: where it is and in what state."""

    serial: str
    kind: str
    holder: str | None
    status: str
    exempt: str | None
    facility: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TreeHead:
    """A chip log tree head the witness saw: from attestation evidence or an inspection."""

    size: int
    root: str  # hex
    source: str
    seen_at: str
    inspection: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Flag:
    """A problem the register found about an item, and the party that answers for it."""

    id: int
    serial: str
    kind: str
    detail: str
    responsible: str | None
    investigation: int | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Investigation:
    """An investigation of a party (footnote 22) and the flags filed under it."""

    id: int
    party: str | None
    reason: str
    status: str
    opened_at: str
    closed_at: str | None
    outcome: str | None
    flags: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Inspection:
    """A stored inspection: what the inspector found on one chip (`statement`: the signed
    statement's body, only where one inspection is asked for)."""

    id: int
    serial: str
    outcome: str  # clean, finding or refused
    problems: list[dict[str, Any]]
    notes: list[Any]
    tree_size: int | None
    root: str | None
    plan: int | None
    holder: str | None
    inspector: str | None
    signed: bool
    recorded_at: str
    statement: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.statement is None:
            del doc["statement"]
        return doc


@dataclass(frozen=True)
class InspectionResult:
    """What `record_inspection` found and stored (`queued`: snapshots newly queued to explain)."""

    inspection: int
    serial: str
    outcome: str
    problems: list[dict[str, Any]]
    notes: list[Any]
    tree_size: int | None
    root: str | None
    attested: dict[str, Any] | None
    queued: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Refusal:
    """A recorded refusal to be inspected (§3: counts as evidence of a violation)."""

    inspection: int
    serial: str
    problems: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"inspection": self.inspection, "serial": self.serial, "outcome": "refused", "problems": self.problems,
                "tree_size": None, "root": None}


@dataclass(frozen=True)
class InspectionCheck:
    """The re-verification of a stored inspection (`ok`: no problem found)."""

    inspection: int
    ok: bool
    outcome: str
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Visit:
    """Drawn chips at one place (holder, facility): one inspector's visit."""

    holder: str
    facility: str | None
    chips: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """A committed inspection plan of one monitoring period; `chips` (draw order) and `visits`
    only once the plan is derived (the Verifier's seed, or after the reveal)."""

    id: int
    period: str
    start: str
    end: str
    stockpile: str  # owners joined by "+", or "*" for every owner
    pooled: bool
    population: int
    samples: int
    reason: str | None
    detection_probability: str | None  # repr of a float, as in the committed document
    setting: dict[str, Any]
    formula: str
    commitment: str
    seed_commitment: str
    revealed: bool
    chips: list[str] | None = None
    visits: list[Visit] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {"plan": self.id, "period": self.period, "start": self.start, "end": self.end,
               "stockpile": self.stockpile, "pooled": self.pooled, "population": self.population,
               "samples": self.samples, "reason": self.reason, "detection_probability": self.detection_probability,
               "setting": dict(self.setting), "formula": self.formula, "commitment": self.commitment,
               "seed_commitment": self.seed_commitment, "revealed": self.revealed}
        if self.chips is not None:
            doc["chips"] = list(self.chips)
        if self.visits is not None:
            doc["visits"] = [v.to_dict() for v in self.visits]
        return doc


@dataclass(frozen=True)
class PlannedChip:
    """One drawn chip of a plan and how its inspection went (`outcome`: pending until one)."""

    serial: str
    holder: str | None
    status: str
    outcome: str
    inspections: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlanStatus:
    """How a plan's inspections went: its drawn chips and the counts per outcome."""

    plan: Plan
    chips: list[PlannedChip]
    counts: dict[str, int]  # clean, finding, refused, pending

    @property
    def complete(self) -> bool:
        return self.counts["pending"] == 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "chips": [c.to_dict() for c in self.chips], "counts": dict(self.counts),
                "complete": self.complete}


@dataclass(frozen=True)
class QueuedSnapshot:
    """A logged snapshot its owner must explain with a transcript (the explanation queue)."""

    serial: str
    counter: int  # the chip log entry
    step: int
    shard_digest: str
    owner: str | None
    inspection: int  # the inspection that found it
    status: str  # pending, explained or unexplained
    verdict_ref: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeclaredRun:
    """A training run an owner declared, with the chips it uses."""

    owner: str | None
    run_id: str
    chips: list[str]
    precommitment: str | None
    declared_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LocationCheck:
    """A stored location check of a chip against its declared facility (`registry.locating`)."""

    id: int
    recorded_at: str
    serial: str
    facility: str | None
    inside: bool
    bounds_km: dict[str, dict[str, Any]]  # per landmark: the tightest round trip's distance bounds
    proven_within_km: dict[str, float | None]  # fibre and vacuum bounds on the distance from the site
    radius_km: float
    speed_km_per_ms: dict[str, float]
    finding: str | None
    problems: list[dict[str, Any]]

    @classmethod
    def from_result(cls, id: int, recorded_at: str, result: dict[str, Any]) -> LocationCheck:
        """From `locating.check`'s result (without its used-up nonces)."""
        return cls(id, recorded_at, result["serial"], result["facility"], result["inside"], result["bounds_km"],
                   result["proven_within_km"], result["radius_km"], result["speed_km_per_ms"], result["finding"],
                   result["problems"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegisteredLandmark:
    """A landmark the register trusts: its key signs round-trip records; it stands where declared."""

    name: str
    keyid: str
    latitude: float
    longitude: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExposureSetting:
    """What an exposure bound assumed: chip rate a (FLOPs per chip-day), snapshot rate f, period
    length T_m (days) and the period's window (None: every inspection counts)."""

    a: float
    f: float
    T_m: float
    start: str | None
    end: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OwnerExposure:
    """One owner's exposure (`analysis.exposure.Exposure`) in the period."""

    name: str
    exposure: Exposure

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.exposure.to_json()}


@dataclass(frozen=True)
class ExposureReport:
    """The covert-capacity bound over the register's state: per owner and overall, at confidence p."""

    period: str | None
    p: float
    setting: ExposureSetting
    overall: Exposure
    owners: list[OwnerExposure]

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "p": self.p, "setting": self.setting.to_dict(), "overall": self.overall.to_json(),
                "owners": [o.to_dict() for o in self.owners]}
