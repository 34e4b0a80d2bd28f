"""Where each Prover stands, and what is still open: the summary people read first.

`standing(queue)` groups the explanation queue (`Registry.explanation_queue(status=None)`) by
owner: snapshots unexplained (a violation: the Verifier found no transcript that explains them),
pending (awaiting the owner's explanation) and explained, with the verdicts that settled them.
`open_findings(...)` lists, worst first, everything that needs someone's attention: unexplained
snapshots per Prover, inspections with findings, refusals, open investigations and flags.
`inspect status` and the dashboard's overview both show these before anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["open_findings", "standing"]

# How a Prover stands, worst first (the order the summaries sort by).
_STATES = ("violation", "awaiting explanation", "all explained", "nothing logged")


def standing(queue: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per owner: {owner, state, unexplained, pending, explained, verdicts, unexplained_chips},
    worst first.

    `state` is "violation" when any logged snapshot was left unexplained by a verdict,
    "awaiting explanation" when some are still pending, else "all explained".
    """
    by_owner: dict[str, dict[str, Any]] = {}
    for row in queue:
        owner = str(row.get("owner") or "(no holder)")
        doc = by_owner.setdefault(owner, {"owner": owner, "unexplained": 0, "pending": 0, "explained": 0, "verdicts": [],
                                                    "unexplained_chips": []})
        status = str(row.get("status"))
        if status in ("unexplained", "pending", "explained"):
            doc[status] += 1
        if status == "unexplained" and row.get("serial") not in doc["unexplained_chips"]:
            doc["unexplained_chips"].append(str(row.get("serial")))
        ref = row.get("verdict_ref")
        if ref and ref not in doc["verdicts"]:
            doc["verdicts"].append(str(ref))
    for doc in by_owner.values():
        doc["state"] = (
            "violation" if doc["unexplained"] else "awaiting explanation" if doc["pending"] else "all explained"
        )
    return sorted(by_owner.values(), key=lambda d: (_STATES.index(d["state"]), -d["unexplained"], d["owner"]))


def open_findings(
    provers: Iterable[dict[str, Any]],
    inspections: Iterable[dict[str, Any]] = (),
    investigations: Iterable[dict[str, Any]] = (),
    flags: Iterable[dict[str, Any]] = (),
) -> list[dict[str, str]]:
    """What needs attention, worst first: [{kind, party, subject, detail}] (plain text cells)."""
    out: list[dict[str, str]] = []
    for p in provers:
        if p["unexplained"]:
            refs = ", ".join(r.split("#")[0] for r in p["verdicts"]) or "no verdict recorded"
            chips = ", ".join(p["unexplained_chips"])
            out.append({"kind": "unexplained snapshots", "party": p["owner"], "subject": f"{p['unexplained']} snapshot(s)",
                        "detail": f"logged by {chips}, explained by no transcript it handed over (verdict {refs})"})
    for i in inspections:
        if i.get("outcome") == "clean":
            continue
        problems = "; ".join(f"{p.get('check', '')}: {p.get('problem', '')}" for p in i.get("problems") or [])
        kind = "refused inspection" if i.get("outcome") == "refused" else "inspection finding"
        out.append({"kind": kind, "party": str(i.get("holder") or ""), "subject": f"chip {i.get('serial')}",
                    "detail": problems or str(i.get("outcome"))})
    for inv in investigations:
        if inv.get("status") == "open":
            out.append({"kind": "open investigation", "party": str(inv.get("party") or ""),
                        "subject": f"investigation {inv.get('id')}", "detail": str(inv.get("reason") or "")})
    for f in flags:
        if f.get("investigation") is None:
            out.append({"kind": "flag", "party": str(f.get("responsible") or ""), "subject": f"chip {f.get('serial')}",
                        "detail": f"{f.get('kind')}: {f.get('detail')}"})
    return out
