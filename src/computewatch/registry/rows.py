"""Typed rows the register's services return (docs/registry.md gives each as a dict: `to_dict`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CustodyRecord", "FabLot", "Flag", "Investigation", "ItemListing", "TreeHead"]


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
