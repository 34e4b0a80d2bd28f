"""The regime page's numbers: Eq. 1 for the registered stockpile, and the detection probability
each committed plan has achieved with the inspections recorded under it so far."""

from __future__ import annotations

from typing import Any

from computewatch.registry import Registry

__all__ = ["REFERENCE_RUNS", "regime"]

# Training compute of reference runs (FLOP), as in the paper's Table 1.
REFERENCE_RUNS = (("GPT-3 (175B)", 3.14e23), ("Chinchilla (70B)", 5.76e23), ("1e25 FLOP", 1e25), ("1e26 FLOP", 1e26))


def regime(reg: Registry) -> dict[str, Any]:
    from sqlalchemy import func, select

    from computewatch.analysis import AnalysisError, Setting
    from computewatch.analysis import plan as eq1_plan
    from computewatch.analysis.detection import detection_probability
    from computewatch.registry import db as reg_db
    from computewatch.registry import schema as rs

    t = rs.items
    with reg_db.read(reg.engine) as conn:
        stockpile, peak = conn.execute(
            select(func.count(), func.max(t.c.peak_flops)).where(t.c.kind == "chip", t.c.status.in_(("active", "damaged")), t.c.exempt.is_(None))
        ).one()
    stockpile, peak = int(stockpile or 0), int(peak or 0)
    a = peak * 86400.0
    rows = []
    for name, H in REFERENCE_RUNS:
        row: dict[str, Any] = {"run": name, "H": H}
        try:
            if stockpile == 0 or a <= 0:
                raise AnalysisError("no chips in service are registered")
            p = eq1_plan(Setting(H=H, C=float(stockpile), a=a), "exact")
            row.update(p.to_json())
        except AnalysisError as exc:
            row.update({"samples_per_period": None, "detection_probability": None, "feasible": False, "reason": str(exc)})
        rows.append(row)
    plans = []
    for summary in reg.plans():
        pid = int(summary["plan"])
        setting = summary.get("setting") or {}
        samples = int(summary.get("samples") or 0)
        done = len(reg.inspections(plan=pid))
        try:
            st = Setting(H=float(setting["H"]), C=float(setting["C"]), a=float(setting["a"]), f=float(setting["f"]),
                         T=float(setting["T"]), T_m=float(setting["T_m"]), p=float(setting["p"]))
            achieved: float | None = detection_probability(st, float(min(done, samples))) if done and samples else 0.0
        except (AnalysisError, KeyError, TypeError, ValueError):
            achieved = None
        plans.append({"id": pid, "period": summary.get("period"), "samples": samples, "inspected": done,
                      "planned_probability": summary.get("detection_probability"), "achieved_probability": achieved,
                      "revealed": summary.get("revealed")})
    return {"stockpile": stockpile, "chip_flops_per_day": a, "eq1": rows, "plans": plans}
