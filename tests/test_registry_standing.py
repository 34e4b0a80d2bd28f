"""Where each Prover stands and what is open (`computewatch.registry.standing`), as `inspect
status` and the dashboard's overview show them first."""

from __future__ import annotations

from computewatch.registry.standing import open_findings, standing


def _q(owner: str, serial: str, counter: int, status: str, ref: str | None = None) -> dict:
    return {"owner": owner, "serial": serial, "counter": counter, "status": status, "verdict_ref": ref}


def test_provers_are_sorted_worst_first_with_their_counts_and_verdicts() -> None:
    rows = [
        _q("alpha", "C1", 1, "explained", "v-a.json#sha256=1"),
        _q("beta", "C2", 1, "pending"),
        _q("gamma", "C3", 1, "explained", "v-g.json#sha256=2"),
        _q("gamma", "C4", 2, "unexplained", "v-g.json#sha256=2"),
        _q("gamma", "C4", 3, "unexplained", "v-g.json#sha256=2"),
    ]
    got = standing(rows)
    assert [(p["owner"], p["state"]) for p in got] == [
        ("gamma", "violation"), ("beta", "awaiting explanation"), ("alpha", "all explained")]
    gamma = got[0]
    assert (gamma["unexplained"], gamma["pending"], gamma["explained"]) == (2, 0, 1)
    assert gamma["verdicts"] == ["v-g.json#sha256=2"] and gamma["unexplained_chips"] == ["C4"]
    assert standing([]) == []


def test_open_findings_list_violations_first_and_leave_closed_matters_out() -> None:
    provers = standing([_q("gamma", "C4", 2, "unexplained", "verifier/v-g.json#sha256=ab"), _q("alpha", "C1", 1, "explained")])
    inspections = [
        {"serial": "C1", "holder": "alpha", "outcome": "clean", "problems": []},
        {"serial": "C5", "holder": "beta", "outcome": "refused", "problems": [{"check": "refusal", "problem": "no access"}]},
        {"serial": "C6", "holder": "beta", "outcome": "finding", "problems": [{"check": "signature", "problem": "entry 3 bad"}]},
    ]
    investigations = [{"id": 1, "party": "beta", "status": "open", "reason": "5 chips lost"},
                      {"id": 2, "party": "alpha", "status": "closed", "reason": "old"}]
    flags = [{"serial": "C7", "responsible": "delta", "kind": "found-elsewhere", "detail": "at epsilon", "investigation": None},
             {"serial": "C8", "responsible": "beta", "kind": "lost", "detail": "x", "investigation": 1}]
    found = open_findings(provers, inspections, investigations, flags)
    assert [f["kind"] for f in found] == [
        "unexplained snapshots", "refused inspection", "inspection finding", "open investigation", "flag"]
    assert found[0]["party"] == "gamma" and "C4" in found[0]["detail"] and "verifier/v-g.json" in found[0]["detail"]
    assert "sha256" not in found[0]["detail"]
    assert found[1]["detail"] == "refusal: no access" and found[2]["subject"] == "chip C6"
    assert all(isinstance(v, str) for f in found for v in f.values())
    assert open_findings(standing([_q("alpha", "C1", 1, "explained")])) == []
