"""The register as services over one unit of work (docs/architecture.md, "The register"): every
service shares the facade's unit of work, a change that spans services commits or rolls back as
one, and the services' typed rows are what the facade's documented dicts are made from."""

from __future__ import annotations

import pytest

from computewatch.crypto.signing import SigningKey
from computewatch.formats.identity import issue_chip_certificate
from computewatch.registry import CustodyRecord, Investigation, ItemListing, Party, Registry
from computewatch.registry.unit import joined

MAKER = SigningKey.from_seed(b"\x61" * 32)
OWNER = SigningKey.from_seed(b"\x62" * 32)


@pytest.fixture()
def reg(tmp_path):
    r = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    r.add_chipmaker("maker", MAKER.public_key)
    r.add_owner("acme", OWNER.public_key)
    cert = issue_chip_certificate(MAKER, "CW-S-1", SigningKey.from_seed(b"\x63" * 32).public_key, "sim", 10**12)
    r.register_certificate(cert.to_json())
    yield r
    r.close()


def test_every_service_works_in_the_facades_one_unit_of_work(reg) -> None:
    services = vars(reg.services)
    assert set(services) == {"parties", "chips", "lots", "custody", "witness", "inspections", "planning", "location",
                             "exposure"}
    assert all(svc._uow is reg.uow and svc._svc is reg.services for svc in services.values())


def test_a_change_across_services_rolls_back_as_one(reg) -> None:
    # A caller's transaction (as the service joins requests) spans a custody change and a
    # parties change; rolled back, neither is left behind.
    with reg.engine.connect() as conn:
        tx = conn.begin()
        with joined(conn):
            reg.ship("CW-S-1", "acme", MAKER, OWNER)
            reg.add_owner("ghost", SigningKey.from_seed(b"\x64" * 32).public_key)
            assert reg.holder("CW-S-1") == "acme"  # the joined reads see the uncommitted writes
        tx.rollback()
    assert reg.holder("CW-S-1") == "maker"
    assert [p["name"] for p in reg.parties()] == ["acme", "maker"]


def test_typed_rows_are_what_the_facade_documents(reg) -> None:
    reg.ship("CW-S-1", "acme", MAKER, OWNER)
    party = reg.services.parties.party("acme")
    assert isinstance(party, Party) and party.public_key == OWNER.public_key.raw
    assert party.verify_key.keyid == OWNER.public_key.keyid and party.to_dict() == reg.party("acme")
    listing = reg.services.chips.items()
    assert listing == [ItemListing("CW-S-1", "chip", "acme", "active", None, None)]
    assert [i.to_dict() for i in listing] == reg.items()
    with reg.uow.read() as conn:
        item = reg.uow.item_row(conn, "CW-S-1")
        records = reg.services.chips.custody_records(conn, item.id)
    assert all(isinstance(r, CustodyRecord) for r in records)
    assert [(r.seq, r.kind, r.from_party, r.to_party, r.signed) for r in records] == [
        (0, "create", None, "maker", False), (1, "transfer", "maker", "acme", True)]
    assert [r.to_dict() for r in records] == reg.chip("CW-S-1")["custody"]
    inv = reg.open_investigation("acme", "audit")
    closed = reg.services.custody.close_investigation(inv, "accounted for")
    assert isinstance(closed, Investigation) and (closed.status, closed.outcome) == ("closed", "accounted for")
    assert [i.to_dict() for i in reg.services.custody.investigations()] == reg.investigations()


def test_inspection_rows_are_the_facades_dicts(reg) -> None:
    from computewatch.registry.rows import Inspection, Refusal

    refusal = reg.services.inspections.refuse("CW-S-1", "the owner turned the inspector away")
    assert isinstance(refusal, Refusal) and refusal.serial == "CW-S-1"
    listed = reg.services.inspections.inspections()
    assert all(isinstance(i, Inspection) for i in listed) and [i.outcome for i in listed] == ["refused"]
    assert [i.to_dict() for i in listed] == reg.inspections() and "statement" not in reg.inspections()[0]
    one = reg.services.inspections.inspection(refusal.inspection)
    assert one.statement is not None and one.to_dict() == reg.inspection(refusal.inspection)
    assert reg.inspection(refusal.inspection)["statement"]["predicate"]["outcome"] == "refused"
    again = reg.refuse("CW-S-1", "again")
    assert again == {"inspection": refusal.inspection + 1, "serial": "CW-S-1", "outcome": "refused",
                     "problems": [{"check": "refusal", "entry": None, "problem": "again"}], "tree_size": None, "root": None}
    assert reg.chip("CW-S-1")["inspections"] == reg.inspections()


def test_plan_rows_are_the_facades_dicts(reg) -> None:
    from datetime import UTC, datetime, timedelta

    from computewatch.registry.rows import Plan, PlanStatus, Visit

    reg.ship("CW-S-1", "acme", MAKER, OWNER)
    start = datetime.now(UTC) - timedelta(days=40)  # the period is over: the seed can be revealed
    committed, seed = reg.services.planning.commit_plan("p", ["acme"], flops=10**12 * 86400 * 10, start=start,
                                                        group_by_facility=True)
    assert isinstance(committed, Plan) and committed.chips is None and "chips" not in committed.to_dict()
    assert [p.to_dict() for p in reg.services.planning.plans()] == reg.plans() == [committed.to_dict()]
    drawn = reg.services.planning.plan(committed.id, seed)
    assert drawn.chips == ["CW-S-1"] and drawn.visits == [Visit("acme", None, ["CW-S-1"])]
    assert drawn.to_dict() == reg.plan(committed.id, seed) and reg.plan(committed.id, seed)["visits"][0]["holder"] == "acme"
    reg.refuse("CW-S-1", "not today", plan=committed.id)
    status = reg.services.planning.plan_status(committed.id, seed)
    assert isinstance(status, PlanStatus) and status.counts["refused"] == 1 and status.complete
    assert status.to_dict() == reg.plan_status(committed.id, seed)
    assert reg.plan_status(committed.id, seed)["chips"][0]["outcome"] == "refused"
    revealed = reg.services.planning.reveal(committed.id, seed)
    assert revealed.revealed and revealed.to_dict() == reg.plan(committed.id)


def test_queue_and_run_rows_are_the_facades_dicts(reg) -> None:
    from sqlalchemy import insert

    from computewatch.registry import schema as s
    from computewatch.registry.rows import DeclaredRun, QueuedSnapshot

    reg.ship("CW-S-1", "acme", MAKER, OWNER)
    found = reg.refuse("CW-S-1", "stands in for an inspection that logged snapshots")
    with reg.uow.write() as conn:  # the queue rows an inspection of a chip with two logged snapshots adds
        item, owner = reg.uow.item_row(conn, "CW-S-1"), reg.uow.party_row(conn, "acme")
        conn.execute(insert(s.explanations), [
            {"item_id": item.id, "counter": k, "step": 10 * k, "shard_digest": f"{k:064x}", "owner_id": owner.id,
             "inspection_id": found["inspection"], "status": "pending", "verdict_ref": None, "updated_at": reg.now()}
            for k in (1, 2)])
    reg.mark_explained("CW-S-1", 2, "verdict-7")
    queue = reg.services.inspections.explanation_queue(status=None)
    assert queue == [QueuedSnapshot("CW-S-1", 1, 10, f"{1:064x}", "acme", found["inspection"], "pending", None),
                     QueuedSnapshot("CW-S-1", 2, 20, f"{2:064x}", "acme", found["inspection"], "explained", "verdict-7")]
    assert [q.to_dict() for q in queue] == reg.explanation_queue(status=None)
    assert reg.explanation_queue("acme") == [queue[0].to_dict()]
    reg.declare_run("acme", "run-1", ["CW-S-1"])
    runs = reg.services.custody.runs("acme")
    assert [(r.owner, r.run_id, r.chips) for r in runs] == [("acme", "run-1", ["CW-S-1"])]
    assert all(isinstance(r, DeclaredRun) for r in runs) and [r.to_dict() for r in runs] == reg.runs()


def test_location_and_landmark_rows_are_the_facades_dicts(reg) -> None:
    from datetime import UTC, datetime

    from computewatch.crypto.dsse import Envelope
    from computewatch.formats.location import Round, answer_input, make_evidence, sign_record
    from computewatch.registry.rows import LocationCheck, RegisteredLandmark

    mark, device = SigningKey.from_seed(b"\x65" * 32), SigningKey.from_seed(b"\x63" * 32)
    added = reg.services.location.add_landmark("muc", mark.public_key, 48.1372, 11.5756)
    assert added == RegisteredLandmark("muc", mark.public_key.keyid, 48.1372, 11.5756)
    assert reg.landmarks() == [added.to_dict()] == [reg.services.location.landmark("muc").to_dict()]
    assert reg.add_landmark("ham", SigningKey.from_seed(b"\x66" * 32).public_key, 53.55, 9.99)["role"] == "landmark"
    reg.ship("CW-S-1", "acme", MAKER, OWNER)
    with reg.uow.read() as conn:
        cert = Envelope.from_json(bytes(reg.uow.item_row(conn, "CW-S-1").certificate))
    nonce = b"\x07" * 32
    rounds = [Round(nonce, device.sign(answer_input(mark.public_key.keyid, "CW-S-1", nonce)), 200_000)]
    record = sign_record(mark, "CW-S-1", device.public_key.raw, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                         rounds)
    located = reg.services.location.locate("CW-S-1", make_evidence("CW-S-1", cert, [record]))
    # The chip has no declared facility: the check is a finding, stored and flagged like any other.
    assert isinstance(located, LocationCheck) and not located.inside and located.finding
    assert "muc" in located.bounds_km and located.serial == "CW-S-1"
    listed = reg.services.location.locations("CW-S-1")
    assert listed == [located] and [c.to_dict() for c in listed] == reg.locations("CW-S-1") == reg.chip("CW-S-1")["locations"]


def test_exposure_rows_are_the_facades_dicts(reg) -> None:
    from computewatch.registry.rows import ExposureReport

    reg.ship("CW-S-1", "acme", MAKER, OWNER)
    reg.refuse("CW-S-1", "locked out")  # a refused chip is outside the sampling: unaccounted
    report = reg.services.exposure.exposure(p=0.8)
    assert isinstance(report, ExposureReport) and report.setting.start is None and report.p == 0.8
    assert [(o.name, o.exposure.chips, o.exposure.unaccounted) for o in report.owners] == [("acme", 1, 1)]
    assert report.overall.max_hidden_flops == report.owners[0].exposure.max_hidden_flops > 0
    assert report.to_dict() == reg.exposure(p=0.8)
    assert reg.exposure(p=0.8)["owners"][0]["max_hidden_flops_unaccounted"] == report.owners[0].exposure.unaccounted_flops
