"""A lot chip's creation record, kept once per lot.

A chip registered with its whole lot (`register_lot`) has no custody row for its creation: the
record (seq 0, "create", from nobody to the chipmaker, note "certified by <chipmaker> in lot
<lot>", at the lot's registration time) is the same for every chip of the lot but its label, so
the register keeps it once, in the lot's `chip_lots` row, and reads it back here with exactly the
record digest a stored row would carry (the custody hash chain is unchanged: docs/registry.md,
"Lots"). Every reader of an item's custody takes its rows from `custody_rows`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from computewatch.registry import schema as s
from computewatch.registry.custody import GENESIS, custody_record, record_digest

__all__ = ["CustodyRow", "custody_rows", "genesis_row", "lot_note"]


def lot_note(chipmaker: str, lot: str) -> str:
    """The creation note of a chip registered by lot (the single-chip path writes the same)."""
    return f"certified by {chipmaker} in lot {lot}"


@dataclass(frozen=True)
class CustodyRow:
    """A custody record with the columns of a `custody` row that its readers use."""

    seq: int
    kind: str
    from_id: int | None
    to_id: int | None
    facility_id: int | None
    statement: bytes | None
    note: str
    recorded_at: str
    record_digest: str | None


def genesis_row(conn: Connection, register_id: str, name_of: Callable[[Connection, int | None], str | None],
                item: Any) -> CustodyRow | None:
    """The item's creation record kept by its lot, or None when the item has its own row."""
    if item.genesis_lot_id is None:
        return None
    t = s.chip_lots
    lot = conn.execute(select(t.c.chipmaker_id, t.c.label, t.c.registered_at).where(t.c.id == item.genesis_lot_id)).one()
    maker = name_of(conn, lot.chipmaker_id)
    note = lot_note(str(maker), lot.label)
    digest = record_digest(custody_record(
        register=register_id, label=item.label, seq=0, kind="create", from_name=None, to_name=maker, facility=None,
        statement=None, note=note, recorded_at=lot.registered_at, prev=GENESIS,
    ))
    return CustodyRow(0, "create", None, lot.chipmaker_id, None, None, note, lot.registered_at, digest)


def custody_rows(conn: Connection, register_id: str, name_of: Callable[[Connection, int | None], str | None],
                 item: Any) -> list[Any]:
    """The item's whole custody history, oldest first: its lot's creation record (if any), then
    its own rows."""
    c = s.custody
    rows: list[Any] = list(conn.execute(select(c).where(c.c.item_id == item.id).order_by(c.c.seq)).all())
    first = genesis_row(conn, register_id, name_of, item)
    return rows if first is None else [first, *rows]
