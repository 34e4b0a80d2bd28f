"""Inspection planning per monitoring period: s from Eq. 1, a committed seed, a reproducible draw."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from computewatch.crypto.canonical import canonical_json, parse_canonical_json
from computewatch.registry import schema as s
from computewatch.registry.unit import Service, format_time
from computewatch.registry.errors import NotFoundError, PlanError
from computewatch.registry.rows import Plan, PlannedChip, PlanStatus, Visit
from computewatch.registry.planning import (
    DRAW_TAG,
    encode_population,
    new_seed,
    plan_commitment,
    population_digest,
    rederive,
    seed_commitment,
)

__all__ = ["PlanningService"]

_ELIGIBLE = ("active", "damaged")
_IN_CHUNK = 500


def _num(x: float) -> str:
    return repr(float(x))


def _samples(setting: Any, per_period: float | None, reason: str | None) -> tuple[int, str | None]:
    """Chips to draw: Eq. 1's s (at most C). If the stockpile alone cannot do the run at all,
    none (pool owners to cover collusion); if no s <= C reaches p, every chip."""
    from computewatch.analysis.params import ceil_tolerant

    C = int(setting.C)
    if setting.infeasibility() is not None:
        return 0, setting.infeasibility()
    if per_period is None or ceil_tolerant(per_period) > C:
        return C, reason or f"Eq. 1 asks for more than the {C} chips: every chip is inspected"
    return max(1, ceil_tolerant(per_period)), reason


class PlanningService(Service):
    def commit_plan(
        self,
        period: str,
        owners: Sequence[str] | None = None,
        *,
        flops: float,
        start: datetime | None = None,
        T: float = 30.0,
        T_m: float = 30.0,
        p: float = 0.9,
        f: float = 0.1,
        a: float | None = None,
        formula: str = "exact",
        group_by_facility: bool = False,
        seed: bytes | None = None,
    ) -> tuple[Plan, bytes]:
        """Commit to the inspection plan of one monitoring period; returns (plan, seed).

        The stockpile is the chips in service held by `owners` (owners or chipmakers; None: every
        owner, the world as one Prover), minus exempt ones; several owners are pooled (collusion mode, §3.2). s comes from
        Eq. 1 (`computewatch.analysis.plan`) with C the stockpile's size and, unless given, a the
        largest certified peak FLOP/s in it times 86400. The seed (fresh unless given) stays with
        the Verifier until `reveal`; the register keeps only its hash inside the commitment."""
        from computewatch.analysis import AnalysisError, Setting
        from computewatch.analysis import plan as eq1_plan
        if not isinstance(period, str) or not period.strip() or len(period) > 64 or period != period.strip():
            raise PlanError(f"period label {period!r}: 1 to 64 characters, no leading or trailing spaces")
        seed = new_seed() if seed is None else seed
        start_t = self._uow.clock() if start is None else start
        with self._uow.read() as conn:
            owner_rows, stockpile = self._stockpile(conn, owners)
            t = s.items
            q = select(t.c.label, t.c.peak_flops).where(
                t.c.holder_id.in_([r.id for r in owner_rows]), t.c.kind == "chip", t.c.status.in_(_ELIGIBLE),
                t.c.exempt.is_(None),
            )
            rows = conn.execute(q).all()
            existing = conn.execute(
                select(s.plans.c.id).where(s.plans.c.period == period, s.plans.c.stockpile == stockpile)
            ).scalar()
        if existing is not None:
            raise PlanError(f"plan {existing} already covers period {period!r} for stockpile {stockpile!r}: one plan per period")
        if not rows:
            raise PlanError(f"stockpile {stockpile!r} holds no chip in service that is not exempt: nothing to sample")
        population = encode_population([r.label for r in rows])
        a_value = a if a is not None else max(int(r.peak_flops) for r in rows) * 86400.0
        try:
            setting = Setting(H=flops, C=float(len(rows)), a=a_value, f=f, T=T, T_m=T_m, p=p)
            eq1 = eq1_plan(setting, formula)
        except AnalysisError as exc:
            raise PlanError(f"Eq. 1: {exc}") from None
        samples, reason = _samples(setting, eq1.samples_per_period, eq1.reason)
        end_t = start_t + timedelta(days=T_m)
        document = {
            "v": 1,
            "register": self._uow.register_id,
            "period": period,
            "start": format_time(start_t),
            "end": format_time(end_t),
            "stockpile": {"owners": stockpile, "pooled": stockpile == "*" or "+" in stockpile},
            "setting": {"H": _num(flops), "C": len(rows), "a": _num(a_value), "f": _num(f), "T": _num(T),
                        "T_m": _num(T_m), "p": _num(p)},
            "formula": formula,
            "samples": samples,
            "reason": reason,
            "warnings": list(getattr(eq1, "warnings", ())),
            "detection_probability": None if eq1.detection_probability is None else _num(eq1.detection_probability),
            "population": {"size": len(rows), "digest": population_digest(population),
                           "order": "serials in ascending UTF-8 byte order, each followed by LF"},
            "group_by_facility": bool(group_by_facility),
            "seed_commitment": seed_commitment(seed),
            "draw": DRAW_TAG.rstrip(b"\x00").decode(),
        }
        commitment = plan_commitment(document)
        with self._uow.write() as conn:
            plan_id = self._uow.insert_id(conn, insert(s.plans).values(
                period=period, stockpile=stockpile, document=canonical_json(document), commitment=commitment,
                population=zlib.compress(population, 6), samples=samples, period_end=document["end"],
                created_at=self._uow.now(),
            ))
        return self._plan_summary(int(plan_id), document, commitment, revealed=False), seed

    def _stockpile(self, conn: Connection, owners: Sequence[str] | None) -> tuple[Sequence[Any], str]:
        if owners is None:
            rows = conn.execute(select(s.parties).where(s.parties.c.role == "owner")).all()
            return list(rows), "*"
        names = sorted(set(owners))
        if not names:
            raise PlanError("name at least one owner, or none for every owner")
        # A chipmaker's unsold stock is a stockpile too (chips in a warehouse can train).
        return [self._uow.party_row(conn, n, ("owner", "chipmaker")) for n in names], "+".join(names)

    def plan_row(self, conn: Connection, plan_id: int) -> Any:
        row = conn.execute(select(s.plans).where(s.plans.c.id == plan_id)).first()
        if row is None:
            raise NotFoundError(f"no inspection plan {plan_id}")
        return row

    def _plan_summary(self, plan_id: int, doc: dict[str, Any], commitment: str, *, revealed: bool,
                      chips: list[str] | None = None, visits: list[Visit] | None = None) -> Plan:
        return Plan(plan_id, doc["period"], doc["start"], doc["end"], doc["stockpile"]["owners"],
                    doc["stockpile"]["pooled"], doc["population"]["size"], doc["samples"], doc["reason"],
                    doc["detection_probability"], doc["setting"], doc["formula"], commitment, doc["seed_commitment"],
                    revealed, chips, visits)

    def plans(self) -> list[Plan]:
        with self._uow.read() as conn:
            rows = conn.execute(select(s.plans).order_by(s.plans.c.id)).all()
        return [self._plan_summary(r.id, parse_canonical_json(bytes(r.document)), r.commitment, revealed=r.seed is not None)
                for r in rows]

    def plan_parts(self, plan_id: int) -> dict[str, bytes | str | None]:
        """What anyone needs to re-derive a plan (`planning.rederive`): the document, the
        population bytes, the commitment and, once revealed, the seed."""
        with self._uow.read() as conn:
            row = self.plan_row(conn, plan_id)
        return {"document": bytes(row.document), "population": zlib.decompress(bytes(row.population)),
                "commitment": row.commitment, "seed": row.seed}

    def plan(self, plan_id: int, seed: bytes | None = None) -> Plan:
        """The chips drawn for a committed plan, in draw order (and grouped into visits when the
        plan asked for it). Before the reveal only the Verifier's `seed` derives it."""
        with self._uow.read() as conn:
            row = self.plan_row(conn, plan_id)
        if row.seed is not None:
            stored = bytes.fromhex(row.seed)
            if seed is not None and seed != stored:
                raise PlanError(f"plan {plan_id} was revealed with another seed")
            seed = stored
        elif seed is None:
            raise PlanError(
                f"plan {plan_id} is not revealed yet: only the Verifier's seed derives it before the period ends"
            )
        chips = rederive(bytes(row.document), zlib.decompress(bytes(row.population)), seed, row.commitment)
        doc = parse_canonical_json(bytes(row.document))
        visits = self._visits(chips) if doc["group_by_facility"] else None
        return self._plan_summary(plan_id, doc, row.commitment, revealed=row.seed is not None, chips=chips,
                                  visits=visits)

    def _visits(self, serials: list[str]) -> list[Visit]:
        """The drawn chips grouped by where they are now (holder, facility): one visit each."""
        t = s.items
        groups: dict[tuple[str, str | None], list[str]] = {}
        with self._uow.read() as conn:
            for k in range(0, len(serials), _IN_CHUNK):
                part = serials[k : k + _IN_CHUNK]
                for r in conn.execute(select(t.c.label, t.c.holder_id, t.c.facility_id).where(t.c.label.in_(part))):
                    key = (str(self._uow.name_of(conn, r.holder_id)), self._uow.facility_name(conn, r.facility_id))
                    groups.setdefault(key, []).append(r.label)
        order = {serial: i for i, serial in enumerate(serials)}
        return [
            Visit(holder, facility, sorted(chips, key=order.__getitem__))
            for (holder, facility), chips in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        ]

    def reveal(self, plan_id: int, seed: bytes) -> Plan:
        """Publish the seed after the period: anyone can then re-derive the plan."""
        with self._uow.read() as conn:
            row = self.plan_row(conn, plan_id)
        if row.seed is not None:
            raise PlanError(f"plan {plan_id} is already revealed")
        now = self._uow.now()
        if now < row.period_end:
            raise PlanError(
                f"plan {plan_id}'s period ends at {row.period_end}: reveal the seed after it (earlier, owners would "
                "learn which chips will not be inspected)"
            )
        rederive(bytes(row.document), zlib.decompress(bytes(row.population)), seed, row.commitment)
        with self._uow.write() as conn:
            done = conn.execute(
                update(s.plans).where(s.plans.c.id == plan_id, s.plans.c.seed.is_(None)).values(seed=seed.hex(), revealed_at=now)
            ).rowcount
            if done != 1:
                raise PlanError(f"plan {plan_id} is already revealed")
        return self.plan(plan_id)

    def plan_status(self, plan_id: int, seed: bytes | None = None) -> PlanStatus:
        """How the plan's inspections went: per drawn chip its inspections under this plan (or
        within the period), and the counts of clean, finding, refused and pending."""
        out = self.plan(plan_id, seed)
        t, i = s.inspections, s.items
        counts = {"clean": 0, "finding": 0, "refused": 0, "pending": 0}
        chips = []
        assert out.chips is not None  # a derived plan lists its chips
        with self._uow.read() as conn:
            for serial in out.chips:
                item = conn.execute(select(i.c.id, i.c.holder_id, i.c.status).where(i.c.label == serial)).one()
                rows = conn.execute(
                    select(t.c.id, t.c.outcome, t.c.plan_id, t.c.recorded_at).where(t.c.item_id == item.id).order_by(t.c.id)
                ).all()
                mine = [r for r in rows if r.plan_id == plan_id or (r.plan_id is None and out.start <= r.recorded_at <= out.end)]
                outcome = mine[-1].outcome if mine else "pending"
                counts[outcome] += 1
                chips.append(PlannedChip(serial, self._uow.name_of(conn, item.holder_id), item.status, outcome,
                                         [r.id for r in mine]))
        return PlanStatus(out, chips, counts)
