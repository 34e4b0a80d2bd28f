"""Custody (§6.1) on SQLite and PostgreSQL: chips enter only with a verified certificate, every
item has one holder, transfers need the holder's signature and the receiver's countersignature,
replays and forgeries are refused, history is append-only, mass losses open an investigation,
chips that turn up without a custody trail are flagged."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import rfc8785
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, Envelope, sign_envelope
from computewatch.crypto.signing import SigningKey
from computewatch.registry import (
    ConflictError,
    CustodyError,
    NotFoundError,
    RegistryError,
)
from computewatch.registry.custody import (
    PRED_REPORT,
    PRED_REPORT_V1,
    PRED_TRANSFER,
    PRED_TRANSFER_V1,
    countersign,
    item_subject,
    parse_statement,
    report_statement,
    require_signature,
    sign_statement,
    transfer_statement,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "registry.md"


# ---------------------------------------------------------------------- the format
@pytest.mark.parametrize("legacy", [False, True])
def test_custody_statement_vector_matches_docs(legacy: bool) -> None:
    """The page's v2 vector (RFC 8785, checked with the `rfc8785` package) and its legacy v1
    vector, which must still verify."""
    giver, receiver, device = (SigningKey.from_seed(bytes([b]) * 32) for b in (0x11, 0x22, 0x33))
    stmt = transfer_statement(
        register="0123456789abcdef0123456789abcdef",
        subject=item_subject("chip", "CW-VECTOR-0001", device.public_key.keyid),
        seq=1,
        giver=("maker", giver.public_key),
        receiver=("acme", receiver.public_key),
        facility="dc-1",
        time="2026-01-01T00:00:00Z",
        **({"predicate_type": PRED_TRANSFER_V1} if legacy else {}),
    )
    env = countersign(sign_statement(stmt, giver), receiver)
    payload = env.payload.decode()
    if legacy:
        assert env.payload == canonical_json(stmt) and stmt["predicateType"] == "urn:computewatch:custody-transfer:v1"
        want = ["69ca415d12fd59d217bca0de66e0025d8e3ccd91c72f7014edc6ec1cd2ab90aa"
                "8410277d87178a8aeb8e7b529ab435ba8fc39627cb659390a901c105e44d580b",
                "37557d488576c362461ee8f9a73b6ae054c1ce7141558dcc5bf4e3b9a867e5a4"
                "35bbbd1c27f4f75c299326839893c8620801a97bba2f7291a2fc922228043c0d"]
        assert [sig.hex() for _, sig in env.signatures] == want
    else:
        assert env.payload == rfc8785.dumps(stmt) and stmt["predicateType"] == "urn:computewatch:custody-transfer:v2"
    sigs = [sig.hex() for _, sig in env.signatures]
    docs = DOCS.read_text()
    assert payload in docs, "docs/registry.md must quote the vector's payload"
    for sig in sigs:
        assert sig in docs, "docs/registry.md must quote both signatures"
    assert env.to_json().decode() in docs
    st = parse_statement(env.to_json())
    assert (st.kind, st.label, st.seq, st.register) == ("transfer", "CW-VECTOR-0001", 1, "0123456789abcdef0123456789abcdef")
    for key in (giver, receiver):
        require_signature(env, key.public_key, "party")


def test_a_statement_not_in_its_tags_encoding_is_refused() -> None:
    """One encoding per tag: a float makes the two canonical forms differ."""
    key = SigningKey.from_seed(b"\x01" * 32)
    stmt = report_statement(register="r", subject=item_subject("wafer", "L1/W01"), seq=1, holder=("a", key.public_key),
                            report="lost", reason="fell", time="2026-01-01T00:00:00Z")
    stmt["predicate"]["seq"] = 1e-05  # "1e-05" (v1) or "0.00001" (v2); the encoding check comes first
    for tag, encode in ((PRED_REPORT, canonical_json), (PRED_REPORT_V1, rfc8785.dumps)):
        stmt["predicateType"] = tag
        env = sign_envelope(PAYLOAD_TYPE_INTOTO, encode(stmt), key)
        with pytest.raises(CustodyError, match="canonical JSON"):
            parse_statement(env)
    with pytest.raises(CustodyError, match="predicate type"):
        report_statement(register="r", subject=item_subject("wafer", "L1/W01"), seq=1, holder=("a", key.public_key),
                         report="lost", reason="", time="2026-01-01T00:00:00Z", predicate_type=PRED_TRANSFER)


def test_malformed_statements_are_refused_with_a_reason() -> None:
    key = SigningKey.from_seed(b"\x01" * 32)
    with pytest.raises(CustodyError, match="not valid JSON"):
        parse_statement(b"{not json")
    stmt = transfer_statement(
        register="r", subject=item_subject("wafer", "L1/W01"), seq=1, giver=("a", key.public_key),
        receiver=("b", key.public_key), facility=None, time="2026-01-01T00:00:00Z",
    )
    stmt["predicate"]["seq"] = 0
    with pytest.raises(CustodyError, match="'seq' must be an integer >= 1"):
        parse_statement(sign_statement(stmt, key))
    stmt["predicate"].update(seq=1, extra=True)
    with pytest.raises(CustodyError, match="predicate fields"):
        parse_statement(sign_statement(stmt, key))


# ---------------------------------------------------------------------- registration
def test_chip_enters_only_with_a_certificate_from_a_registered_chipmaker(registry, tmp_path) -> None:
    from computewatch.chip import provision_chips

    reg = registry.reg
    doc = reg.register_chip(registry.chips[0])
    cert = json.loads((registry.chips[0] / "chip.json").read_text())
    assert (doc["serial"], doc["holder"], doc["holder_role"]) == (cert["serial"], "maker", "chipmaker")
    assert doc["peak_flops"] == int(cert["peak_flops"]) and doc["model"] == cert["model"]
    assert doc["device_key"] == registry.keys["maker"].public_key.raw.hex() or len(doc["device_key"]) == 64
    with pytest.raises(RegistryError, match="already registered"):
        reg.register_chip(registry.chips[0])
    # A chip from another chipmaker carries that chipmaker's key beside it: never trusted.
    other = provision_chips(tmp_path / "other", 1, snapshots_per_day=1.0)[0]
    assert (other / "chipmaker.pub").exists()
    with pytest.raises(RegistryError, match="does not verify under any registered chipmaker root"):
        reg.register_chip(other)
    # Typed-in fields cannot sneak in: an edited certificate no longer verifies.
    forged = tmp_path / "forged"
    forged.mkdir()
    env = json.loads((registry.chips[1] / "certificate.json").read_text())
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["predicate"]["peak_flops"] = "1"
    env["payload"] = base64.b64encode(canonical_json(payload)).decode()
    (forged / "certificate.json").write_text(json.dumps(env))
    with pytest.raises(RegistryError, match="does not verify"):
        reg.register_chip(forged)
    with pytest.raises(RegistryError, match="not a chip state directory"):
        reg.register_chip(tmp_path / "nothing-here")
    assert [c["serial"] for c in reg.items()] == [doc["serial"]]


def test_bulk_registration_checks_every_certificate(registry) -> None:
    reg = registry.reg
    certs = [(c / "certificate.json").read_bytes() for c in registry.chips[:4]]
    assert reg.register_certificates(certs[:3], batch=2, workers=0) == 3
    assert len(reg.items()) == 3 and reg.verify_custody(reg.items()[0]["serial"])["ok"]
    with pytest.raises(RegistryError, match=r"certificate 1 .* refused: chip certificate is malformed"):
        reg.register_certificates([certs[3], b"{}"], batch=1, workers=0)
    assert len(reg.items()) == 4  # the batch before the bad certificate stays registered


# ---------------------------------------------------------------------- transfers
def test_transfers_keep_exactly_one_holder_and_a_verifiable_history(registry) -> None:
    reg, keys = registry.reg, registry.keys
    serial = registry.register(0, to="acme")
    out = reg.transfer_with_keys(serial, "beta", keys["acme"], keys["beta"], facility="hall-2")
    assert (out["from"], out["to"], out["seq"]) == ("acme", "beta", 2)
    assert reg.holder(serial) == "beta" and reg.chips_of("beta") == [serial] and reg.chips_of("acme") == []
    doc = reg.chip(serial)
    assert [(c["seq"], c["kind"], c["from"], c["to"]) for c in doc["custody"]] == [
        (0, "create", None, "maker"), (1, "transfer", "maker", "acme"), (2, "transfer", "acme", "beta"),
    ]
    assert doc["facility"] == "hall-2" and all(c["signed"] for c in doc["custody"][1:])
    check = reg.verify_custody(serial)
    assert check["ok"] and check["records"] == 3 and check["head"] == doc["custody"][-1]["record_digest"]
    with pytest.raises(CustodyError, match="already shipped"):
        reg.ship(serial, "acme", keys["beta"], keys["acme"])
    with pytest.raises(NotFoundError, match="no party named 'nobody'"):
        reg.transfer_statement(serial, "nobody")


def _statement(registry, serial: str, to: str) -> dict:
    return registry.reg.transfer_statement(serial, to)


def test_a_legacy_v1_statement_is_applied_and_stays_verifiable(registry) -> None:
    """Statements stored before format version 2 are v1: the register re-checks them."""
    reg, keys = registry.reg, registry.keys
    serial = registry.register(0, to="acme")
    stmt = reg.transfer_statement(serial, "beta")
    assert stmt["predicateType"] == PRED_TRANSFER
    stmt["predicateType"] = PRED_TRANSFER_V1
    env = countersign(sign_statement(stmt, keys["acme"]), keys["beta"])
    assert env.payload == canonical_json(stmt)
    assert reg.transfer(env)["to"] == "beta"
    env2 = countersign(sign_statement(reg.transfer_statement(serial, "acme"), keys["beta"]), keys["acme"])
    assert reg.transfer(env2)["to"] == "acme"
    check = reg.verify_custody(serial)
    assert check["ok"] and check["records"] == 4, check["problems"]


def test_transfer_without_the_holders_signature_is_refused(registry) -> None:
    reg, keys = registry.reg, registry.keys
    serial = registry.register(0, to="acme")
    stmt = _statement(registry, serial, "beta")
    # Signed by the receiver alone (plus a stranger): no signature by the holder.
    stranger = SigningKey.from_seed(b"\x07" * 32)
    env = countersign(sign_statement(stmt, stranger), keys["beta"])
    with pytest.raises(CustodyError, match="no valid signature by the current holder 'acme'"):
        reg.transfer(env)
    # The holder's signature, corrupted.
    good = countersign(sign_statement(stmt, keys["acme"]), keys["beta"])
    bad_sig = bytes([good.signatures[0][1][0] ^ 1]) + good.signatures[0][1][1:]
    bad = Envelope(good.payload_type, good.payload, [(good.signatures[0][0], bad_sig), good.signatures[1]])
    with pytest.raises(CustodyError, match="no valid signature by the current holder"):
        reg.transfer(bad)
    # A statement claiming someone else holds it.
    forged = dict(stmt, predicate=dict(stmt["predicate"], **{"from": {"name": "beta", "keyid": keys["beta"].public_key.keyid}}))
    with pytest.raises(CustodyError, match="is held by 'acme', not by 'beta'"):
        reg.transfer(countersign(sign_statement(forged, keys["beta"]), keys["beta"]))
    assert reg.holder(serial) == "acme" and reg.chip(serial)["custody_seq"] == 1


def test_transfer_without_the_receivers_countersignature_is_refused(registry) -> None:
    reg, keys = registry.reg, registry.keys
    serial = registry.register(0, to="acme")
    env = sign_statement(_statement(registry, serial, "beta"), keys["acme"])
    with pytest.raises(CustodyError, match="no valid signature by the receiver 'beta'"):
        reg.transfer(env)
    assert reg.holder(serial) == "acme"


def test_a_signature_cannot_be_reused(registry) -> None:
    reg, keys = registry.reg, registry.keys
    serial = registry.register(0, to="acme")
    there = countersign(sign_statement(_statement(registry, serial, "beta"), keys["acme"]), keys["beta"])
    reg.transfer(there)
    back = countersign(sign_statement(_statement(registry, serial, "acme"), keys["beta"]), keys["acme"])
    reg.transfer(back)
    # Replaying the first statement would hand the chip to beta again without acme agreeing now.
    with pytest.raises(ConflictError, match=r"custody sequence 2 of .* is already used"):
        reg.transfer(there)
    # The same statement for the next sequence number, or for another register, is not valid either.
    stmt = _statement(registry, serial, "beta")
    ahead = dict(stmt, predicate=dict(stmt["predicate"], seq=stmt["predicate"]["seq"] + 1))
    with pytest.raises(CustodyError, match=r"claims custody sequence 5, but the next one .* is 4"):
        reg.transfer(countersign(sign_statement(ahead, keys["acme"]), keys["beta"]))
    elsewhere = dict(stmt, predicate=dict(stmt["predicate"], register="f" * 32))
    with pytest.raises(CustodyError, match="another register"):
        reg.transfer(countersign(sign_statement(elsewhere, keys["acme"]), keys["beta"]))
    # A statement about one chip's serial but another chip's device key.
    other = registry.register(1)
    twisted = dict(stmt, subject=[dict(stmt["subject"][0], name=f"chip/{other}")])
    with pytest.raises(CustodyError, match="does not match the registered chip"):
        reg.transfer(countersign(sign_statement(twisted, keys["acme"]), keys["beta"]))
    assert reg.holder(serial) == "acme" and reg.verify_custody(serial)["ok"]


def test_history_is_append_only(registry) -> None:
    reg = registry.reg
    serial = registry.register(0, to="acme")
    reg.exempt(serial, "research")
    for sql in ("UPDATE custody SET to_id = from_id", "DELETE FROM custody", "UPDATE exemptions SET category = 'x'",
                "DELETE FROM exemptions"):
        with pytest.raises(DBAPIError, match="append-only"), reg.engine.begin() as conn:
            conn.execute(text(sql))
    if reg.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), reg.engine.begin() as conn:
            conn.execute(text("TRUNCATE custody CASCADE"))
    assert reg.holder(serial) == "acme" and reg.verify_custody(serial)["ok"]


def test_custody_chain_detects_a_rewritten_record(registry) -> None:
    reg = registry.reg
    serial = registry.register(0, to="acme")
    with reg.engine.begin() as conn:  # an operator with database access bypasses the guard
        if reg.engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE custody DISABLE TRIGGER custody_append_only"))
            conn.execute(text("UPDATE custody SET note = 'edited' WHERE seq = 0"))
            conn.execute(text("ALTER TABLE custody ENABLE TRIGGER custody_append_only"))
        else:
            conn.execute(text("DROP TRIGGER custody_append_only_update"))
            conn.execute(text("UPDATE custody SET note = 'edited' WHERE seq = 0"))
    result = reg.verify_custody(serial)
    assert not result["ok"] and "record 0: digest does not match" in result["problems"][0]


# ---------------------------------------------------------------------- losses, investigations
def test_mass_losses_open_an_investigation_and_the_last_holder_answers(registry) -> None:
    reg, keys = registry.reg, registry.keys
    reg.set_setting("loss_investigation_threshold", 3)
    serials = [registry.register(i, to="acme") for i in range(5)]
    out = reg.report_with_key(serials[0], "damaged", keys["acme"], reason="water")
    assert out["investigation"] is None and reg.chip(serials[0])["status"] == "damaged"
    got = [reg.report_with_key(s, "lost", keys["acme"], reason="missing")["investigation"] for s in serials[1:3]]
    assert got == [None, None]
    inv = reg.report_with_key(serials[3], "destroyed", keys["acme"])["investigation"]
    assert inv is not None
    [opened] = reg.investigations(status="open")
    assert opened["party"] == "acme" and "3 items reported lost or destroyed" in opened["reason"]
    assert reg.report_with_key(serials[4], "lost", keys["acme"])["investigation"] == inv  # no second one
    doc = reg.chip(serials[1])
    assert (doc["status"], doc["holder"], doc["responsible"]) == ("lost", "acme", "acme")
    with pytest.raises(CustodyError, match="is lost: it cannot change hands"):
        reg.transfer_with_keys(serials[1], "beta", keys["acme"], keys["beta"])
    with pytest.raises(CustodyError, match="no valid signature by the holder 'acme'"):
        reg.report_with_key(serials[0], "lost", keys["beta"])
    closed = reg.close_investigation(inv, "accounted for")
    assert closed["status"] == "closed" and closed["outcome"] == "accounted for"


def test_chips_that_turn_up_without_a_custody_trail_are_flagged(registry, tmp_path) -> None:
    from computewatch.chip import Chipmaker

    reg, keys = registry.reg, registry.keys
    held = registry.register(0, to="acme")
    assert reg.report_found(held, "acme")["flag"] is None
    moved = reg.report_found(held, "beta", note="seen in beta's hall")
    assert moved["flag"]["kind"] == "custody-mismatch" and moved["flag"]["responsible"] == "acme"
    assert reg.holder(held) == "beta"
    lost = registry.register(1, to="acme")
    reg.report_with_key(lost, "lost", keys["acme"])
    back = reg.report_found(lost, "beta")
    assert back["flag"]["kind"] == "reported-lost" and reg.chip(lost)["status"] == "active"
    # A chip its chipmaker certified but never registered: no custody trail at all.
    maker = Chipmaker.load(registry.chips[2].parent / "chipmaker")
    ghost = maker.manufacture(tmp_path / "ghost", serial="CW-GHOST-1")
    found = reg.report_found("CW-GHOST-1", "beta", chip_dir=ghost)
    assert found["flag"]["kind"] == "no-custody-trail" and found["flag"]["responsible"] == "maker"
    assert reg.chip("CW-GHOST-1")["custody"][0]["kind"] == "found"
    unknown = reg.report_found("CW-NOWHERE", "beta")
    assert unknown["flag"]["kind"] == "unregistered"
    assert {f["kind"] for f in reg.flags()} == {"custody-mismatch", "reported-lost", "no-custody-trail", "unregistered"}


# ---------------------------------------------------------------------- exemptions, production
def test_exemptions(registry) -> None:
    reg = registry.reg
    reg.set_setting("individual_exemption_max", 1)
    a, b = registry.register(0, to="acme"), registry.register(1, to="beta")
    assert reg.exempt(a, "research", reason="university lab")["exempt"] == "research"
    with pytest.raises(RegistryError, match="already exempt"):
        reg.exempt(a, "education")
    assert reg.exempt(b, "individual")["exempt"] == "individual"  # beta holds one chip
    registry.register(2, to="acme")
    c = registry.register(3, to="acme")
    with pytest.raises(RegistryError, match="holds 3 chips, more than 1"):
        reg.exempt(c, "individual")
    assert reg.exempt(a, "research", revoke=True)["exempt"] is None
    with pytest.raises(RegistryError, match="bogus"):
        reg.exempt(a, "bogus")


def test_fab_lots_wafers_and_dies_follow_custody_into_chips(registry) -> None:
    reg, keys = registry.reg, registry.keys
    fab_key = SigningKey.from_seed(b"\x0f" * 32)
    reg.add_fab("fab-1", fab_key.public_key, node_nm=4, site="somewhere")
    lot = reg.produce("fab-1", "LOT-7", wafers=2, dies_per_wafer=3)
    assert lot["wafers"] == ["LOT-7/W01", "LOT-7/W02"] and lot["dies"] == 6
    moved = reg.transfer_with_keys("LOT-7/W01", "maker", fab_key, keys["maker"])
    assert moved["carried"] == 3 and reg.holder("LOT-7/W01/D0002") == "maker"
    assert reg.holder("LOT-7/W02/D0001") == "fab-1"
    with pytest.raises(RegistryError, match="only an active die held by the chipmaker"):
        reg.register_chip(registry.chips[0], die="LOT-7/W02/D0001")
    chip = reg.register_chip(registry.chips[0], die="LOT-7/W01/D0002")
    assert chip["fab"] == "fab-1" and chip["parent"] == "LOT-7/W01/D0002"
    assert reg.chip("LOT-7/W01/D0002")["status"] == "packaged"
    with pytest.raises(RegistryError, match="is packaged"):
        reg.register_chip(registry.chips[1], die="LOT-7/W01/D0002")
    reg.report_with_key("LOT-7/W02", "lost", fab_key, reason="dropped")
    assert reg.chip("LOT-7/W02")["responsible"] == "fab-1"
    assert [d["serial"] for d in reg.items(kind="die", holder="maker", status="active")] == ["LOT-7/W01/D0001", "LOT-7/W01/D0003"]
    assert reg.lots()[0]["dies_per_wafer"] == 3


def test_declared_runs_and_owner_keys(registry) -> None:
    reg, keys = registry.reg, registry.keys
    serial = registry.register(0, to="acme")
    assert reg.owner_key("acme") == keys["acme"].public_key
    run = reg.declare_run("acme", "run-1", [serial], precommitment="ab" * 32)
    assert reg.runs("acme") == [dict(run, declared_at=reg.runs()[0]["declared_at"])]
    with pytest.raises(RegistryError, match="held by 'acme', not 'beta'"):
        reg.declare_run("beta", "run-2", [serial])
    with pytest.raises(RegistryError, match="already registered to 'acme'"):
        reg.add_owner("acme-2", keys["acme"].public_key)
    with pytest.raises(RegistryError, match=r"is a owner, not a chipmaker|is a owner"):
        reg.register_chip(registry.chips[1], fab="acme")


def test_names_are_checked(registry) -> None:
    key = SigningKey.from_seed(b"\x09" * 32).public_key
    for bad in ("", " padded", "a/b", "*", "a+b", "x" * 201):
        with pytest.raises(RegistryError, match=re.escape(f"{bad!r}")):
            registry.reg.add_owner(bad, key)
