"""The covert-capacity bound over the register's actual state (docs/registry.md, "Exposure")."""

from __future__ import annotations

import json

from sqlalchemy import Connection, func, select

from computewatch.registry import schema as s
from computewatch.registry.unit import Service
from computewatch.registry.errors import NotFoundError, RegistryError
from computewatch.registry.rows import ExposureReport, ExposureSetting, OwnerExposure

__all__ = ["DEFAULT_F", "DEFAULT_T_M", "ExposureService"]

DEFAULT_F = 0.1  # snapshots per chip-day (Table 1), when no plan names the period's rate
DEFAULT_T_M = 30.0  # days
_UNTRACKED_FLAGS = ("no-custody-trail", "custody-mismatch")
_GONE = ("lost", "destroyed")  # only the holder's word says where these are
_IN_SERVICE = ("active", "damaged")


class ExposureService(Service):
    def exposure(self, period: str | None = None, *, p: float = 0.9) -> ExposureReport:
        """Per owner and overall: chips, inspected, unaccounted (lost or destroyed, untracked,
        refused, located outside their facility), unexplained snapshots, and the largest run
        (FLOPs) the period's actual inspections do not rule out at confidence p
        (`analysis.exposure`). `period` names a committed plan's period: its chip rate a,
        snapshot rate f, length T_m and time window; without one, every inspection counts and
        f, T_m are Table 1's (0.1/day, 30 days)."""
        from computewatch.analysis import AnalysisError
        from computewatch.analysis.exposure import exposure

        if not isinstance(p, float) or not 0.0 < p < 1.0:
            raise RegistryError(f"p must lie strictly between 0 and 1, got {p!r}")
        with self._uow.read() as conn:
            a, f, T_m, start, end = self._period_setting(conn, period)
            owners = conn.execute(select(s.parties.c.id, s.parties.c.name).where(s.parties.c.role == "owner")
                                  .order_by(s.parties.c.name)).all()
            counts = {o.id: self._owner_counts(conn, o.id, start, end) for o in owners}
            for party_id, n in self._untracked(conn).items():
                if party_id in counts:
                    counts[party_id]["untracked"] += n
        owner_bounds = []
        total = {"chips": 0, "accounted": 0, "inspected": 0, "unaccounted": 0, "unexplained_snapshots": 0}
        try:
            for o in owners:
                c = counts[o.id]
                c["unaccounted"] += c.pop("untracked")
                for k in total:
                    total[k] += c[k]
                owner_bounds.append(OwnerExposure(o.name, exposure(**c, a=a, f=f, T_m=T_m, p=p)))
            overall = exposure(**total, a=a, f=f, T_m=T_m, p=p)
        except AnalysisError as exc:
            raise RegistryError(f"exposure: {exc}") from None
        return ExposureReport(period, p, ExposureSetting(a, f, T_m, start, end), overall, owner_bounds)

    def _period_setting(self, conn: Connection, period: str | None) -> tuple[float, float, float, str | None, str | None]:
        if period is None:
            peak = conn.execute(select(func.max(s.items.c.peak_flops)).where(s.items.c.kind == "chip")).scalar()
            return float(peak or 0) * 86400.0 or 1.0, DEFAULT_F, DEFAULT_T_M, None, None
        docs = [json.loads(bytes(d)) for d in conn.execute(select(s.plans.c.document).where(s.plans.c.period == period)).scalars()]
        if not docs:
            raise NotFoundError(f"no inspection plan covers period {period!r}: commit one (`inspect plan`) or leave --period out")
        setting = [d["setting"] for d in docs]
        # One period, possibly several stockpiles' plans: the fastest chip and the lowest rate bound it.
        return (max(float(x["a"]) for x in setting), min(float(x["f"]) for x in setting),
                max(float(x["T_m"]) for x in setting), min(d["start"] for d in docs), max(d["end"] for d in docs))

    def _owner_counts(self, conn: Connection, owner_id: int, start: str | None, end: str | None) -> dict[str, int]:
        i, t, loc = s.items, s.inspections, s.locations
        chips = conn.execute(select(i.c.id, i.c.status).where(i.c.holder_id == owner_id, i.c.kind == "chip")).all()
        ids = [c.id for c in chips]
        unaccounted = {c.id for c in chips if c.status in _GONE}
        in_window = []
        if start is not None and end is not None:
            in_window = [t.c.recorded_at >= start, t.c.recorded_at < end]
        outcomes: dict[int, set[str]] = {}
        if ids:
            for item_id, outcome in conn.execute(select(t.c.item_id, t.c.outcome).where(t.c.item_id.in_(ids), *in_window)):
                outcomes.setdefault(item_id, set()).add(outcome)
            latest = select(loc.c.item_id, func.max(loc.c.id).label("id")).where(loc.c.item_id.in_(ids))
            if end is not None:
                latest = latest.where(loc.c.recorded_at < end)
            last_ids = [r.id for r in conn.execute(latest.group_by(loc.c.item_id))]
            if last_ids:
                unaccounted |= {r.item_id for r in conn.execute(
                    select(loc.c.item_id).where(loc.c.id.in_(last_ids), loc.c.outcome == "finding"))}
        unaccounted |= {k for k, v in outcomes.items() if "refused" in v}
        accounted = [c.id for c in chips if c.status in _IN_SERVICE and c.id not in unaccounted]
        inspected = sum(1 for c in accounted if outcomes.get(c, set()) & {"clean", "finding"})
        e = s.explanations
        unexplained = self._uow.count(conn, e, e.c.owner_id == owner_id, e.c.status != "explained")
        return {"chips": len(chips), "accounted": len(accounted), "inspected": inspected,
                "unaccounted": len(unaccounted), "unexplained_snapshots": unexplained, "untracked": 0}

    def _untracked(self, conn: Connection) -> dict[int, int]:
        """Chips that turned up outside their custody trail, per party that answers for them."""
        fl = s.flags
        rows = conn.execute(select(fl.c.party_id, func.count(func.distinct(fl.c.item_id)))
                            .where(fl.c.kind.in_(_UNTRACKED_FLAGS), fl.c.item_id.is_not(None)).group_by(fl.c.party_id))
        return {int(pid): int(n) for pid, n in rows if pid is not None}
