"""The service's API through httpx on the ASGI app, on SQLite and PostgreSQL: every endpoint's
success and its refusals (bad signature, replayed nonce, wrong role, another owner's data,
malformed and oversized bodies), and that a refused request stores nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from _service import World, make_world, report_chips  # noqa: F401  (fixture)
from sqlalchemy import func, select

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.merkle import leaf_hash, verify_consistency, verify_inclusion
from computewatch.crypto.signing import SigningKey
from computewatch.registry import db as reg_db
from computewatch.service import schema as ss
from computewatch.service.checkpoint import open_note
from computewatch.service.statements import read_headers, signed_request


@pytest.fixture
def world(db_url: str, registry_chips, report_chips, tmp_path: Path) -> Iterator[World]:  # noqa: F811
    yield from make_world(db_url, registry_chips, report_chips, tmp_path)


def _rows(world: World, table) -> int:
    with reg_db.read(world.reg.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _entries(world: World, serial: str) -> list[bytes]:
    with reg_db.read(world.reg.engine) as conn:
        t = ss.log_entries
        return [bytes(r.line) for r in conn.execute(select(t.c.line).where(t.c.serial == serial).order_by(t.c.counter))]


# ---------------------------------------------------------------------- chips
def test_chip_reports_and_the_copy_equals_its_log(world: World) -> None:
    serial, state = world.report_chip(0)
    chip = world.run_chip(state, 6)
    log = chip.log_path.read_bytes()
    assert b"".join(line + b"\n" for line in _entries(world, serial)) == log
    lines = log.splitlines()
    # A resent line (its ack was lost) is acked again and stored once.
    r = world.client.post(f"/v1/chips/{serial}/entries", content=lines[3])
    assert r.status_code == 200 and r.headers["X-CW-Duplicate"] == "1"
    assert json.loads(r.content)["counter"] == 3
    assert len(_entries(world, serial)) == len(lines)


def test_chip_entries_refused(world: World) -> None:
    serial, state = world.report_chip(1)
    world.run_chip(state, 2)
    stored = _entries(world, serial)
    url = f"/v1/chips/{serial}/entries"
    last = json.loads(stored[-1])
    # A forged next entry: right counter and chain, signature by someone else's key.
    forged = {**last, "counter": last["counter"] + 1, "kind": "tamper", "body": {"reason": "x"}}
    from hashlib import sha256

    forged["prev"] = sha256(stored[-1]).hexdigest()
    forged["sig"] = base64.b64encode(SigningKey.generate().sign(b"x")).decode()
    r = world.client.post(url, content=canonical_json(forged))
    assert r.status_code == 401 and "signature" in r.json()["error"]
    # Another line at a stored counter: the copy never forks.
    other = dict(json.loads(stored[1]))
    other["clock_ns"] = str(int(other["clock_ns"]) + 1)
    r = world.client.post(url, content=canonical_json(other))
    assert r.status_code == 409 and "never forks" in r.json()["error"]
    # A gap, malformed lines, another chip's entry, an unregistered chip, an oversized line.
    r = world.client.post(url, content=canonical_json({**last, "counter": last["counter"] + 5}))
    assert r.status_code == 409
    assert world.client.post(url, content=b"{not json").status_code == 422
    assert world.client.post(url, content=b'{"a":1}').status_code == 422
    assert world.client.post("/v1/chips/CW-OTHER/entries", content=stored[0]).status_code == 422
    unreg = dict(json.loads(stored[0]), serial="CW-NOPE")
    r = world.client.post("/v1/chips/CW-NOPE/entries", content=canonical_json(unreg))
    assert r.status_code == 404 and "not registered" in r.json()["error"]
    big = world.app.state.service.config.max_entry + 1
    r = world.client.post(url, content=b"x" * big)
    assert r.status_code == 413
    assert _entries(world, serial) == stored  # nothing stored by any refusal


def test_public_tree_heads_and_proofs_verify(world: World) -> None:
    serial, state = world.report_chip(2)
    world.run_chip(state, 4)
    lines = _entries(world, serial)
    head = world.client.get(f"/v1/chips/{serial}/tree-head").json()
    assert head["size"] == len(lines)
    assert head["attributed"] == len(lines)  # report-mode firmware signs every entry (log v2)
    info = world.client.get("/v1/service").json()
    from computewatch.crypto.signing import VerifyKey

    key = VerifyKey.from_pem(info["checkpoint_key"]["pem"].encode())
    note = world.client.get(f"/v1/chips/{serial}/checkpoint").text
    origin, size, root = open_note(note, info["checkpoint_key"]["name"], key)
    assert origin.endswith(f"/chip/{serial}") and size == len(lines) and root.hex() == head["root"]
    tampered = note.replace(f"\n{size}\n", f"\n{size + 1}\n")
    from computewatch.crypto.errors import SignatureError

    with pytest.raises(SignatureError):
        open_note(tampered, info["checkpoint_key"]["name"], key)
    for index in (0, 3, len(lines) - 1):
        p = world.client.get(f"/v1/chips/{serial}/proofs/inclusion", params={"index": index}).json()
        assert p["leaf_hash"] == leaf_hash(lines[index]).hex()
        verify_inclusion(bytes.fromhex(p["leaf_hash"]), index, p["size"], [bytes.fromhex(x) for x in p["proof"]], root)
    c = world.client.get(f"/v1/chips/{serial}/proofs/consistency", params={"old": 3}).json()
    verify_consistency(3, c["new"], bytes.fromhex(c["old_root"]), root, [bytes.fromhex(x) for x in c["proof"]])
    assert world.client.get(f"/v1/chips/{serial}/proofs/inclusion", params={"index": len(lines)}).status_code == 404
    assert world.client.get(f"/v1/chips/{serial}/proofs/inclusion", params={"index": -1}).status_code == 422
    assert world.client.get(f"/v1/chips/{serial}/proofs/consistency", params={"old": len(lines) + 1}).status_code == 404
    assert world.client.get("/v1/chips/CW-NOPE/tree-head").status_code == 404


# ---------------------------------------------------------------------- authentication
def test_signed_reads_sessions_and_their_refusals(world: World) -> None:
    acme, beta, v = world.as_party("acme"), world.as_party("beta"), world.as_party("verifier")
    serial, state = world.report_chip(3, to="acme")
    world.run_chip(state, 1)
    assert world.client.get("/v1/chips").status_code == 401  # anonymous
    assert [c["serial"] for c in acme.get("/v1/chips").json()] == [serial]
    assert beta.get("/v1/chips").json() == []
    assert serial in [c["serial"] for c in v.get("/v1/chips").json()]
    assert acme.get(f"/v1/chips/{serial}").json()["holder"] == "acme"
    r = beta.get(f"/v1/chips/{serial}")
    assert r.status_code == 403 and "not held" in r.json()["error"]
    assert beta.get(f"/v1/chips/{serial}/entries").status_code == 403
    assert len(acme.get(f"/v1/chips/{serial}/entries").json()["entries"]) > 0
    # A replayed read (same nonce) is refused.
    nonce = "ab" * 16
    assert acme.get("/v1/me", nonce=nonce).status_code == 200
    r = acme.get("/v1/me", nonce=nonce)
    assert r.status_code == 403 and "replayed" in r.json()["error"]
    # Bad signature: signed for another path; by another key; stale time; unknown party.
    h = read_headers("GET", "/v1/runs", party="acme", key=world.keys["acme"], register=world.register)
    r = world.client.get("/v1/me", headers=h)
    assert r.status_code == 401 and "bad signature" in r.json()["error"]
    h = read_headers("GET", "/v1/me", party="acme", key=world.keys["beta"], register=world.register)
    assert world.client.get("/v1/me", headers=h).status_code == 401
    h = read_headers("GET", "/v1/me", party="acme", key=world.keys["acme"], register=world.register, created=1577836800)
    r = world.client.get("/v1/me", headers=h)
    assert r.status_code == 401 and "clock" in r.json()["error"]
    h = read_headers("GET", "/v1/me", party="mallory", key=world.keys["acme"], register=world.register)
    assert world.client.get("/v1/me", headers=h).status_code == 401
    # Sessions: a signed request buys a token; a bogus token is refused.
    token = acme.session()
    r = world.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.json() == {"party": "acme", "role": "owner"}
    assert world.client.get("/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    # Roles: the regime is for the Verifier and inspectors.
    assert acme.get("/v1/regime").status_code == 403
    assert world.as_party("insp").get("/v1/regime").status_code == 200
    assert v.get("/v1/regime").json()["stockpile"] >= 1
    assert [p["name"] for p in acme.get("/v1/owners").json()] == ["acme"]
    assert {"acme", "beta", "insp"} <= {p["name"] for p in v.get("/v1/owners").json()}


def test_signed_writes_refuse_bad_signature_replay_role_and_bodies(world: World) -> None:
    acme = world.as_party("acme")
    before = (_rows(world, ss.nonces), _rows(world, ss.requests), _rows(world, ss.sessions))
    def post(env: Any) -> Any:
        return world.client.post("/v1/sessions", content=env.to_json())

    # Signed by a key that is not the party's registered key.
    env = signed_request("session", {}, party="acme", key=world.keys["beta"], register=world.register)
    r = post(env)
    assert r.status_code == 401 and "no valid signature" in r.json()["error"]
    # Signed for another action, another register, a stale time, a short nonce.
    for kw, word in (({"action": "verify"}, "action"), ({"register": "0" * 32}, "register"),
                     ({"time": "2020-01-01T00:00:00Z"}, "clock"), ({"nonce": "ab"}, "nonce")):
        action = kw.pop("action", "session")
        env = signed_request(action, {}, party="acme", key=world.keys["acme"], register=kw.pop("register", world.register), **kw)
        r = post(env)
        assert r.status_code == 401 and word in r.json()["error"], (word, r.text)
    # A body altered after signing.
    env = signed_request("session", {}, party="acme", key=world.keys["acme"], register=world.register)
    doc = json.loads(env.payload)
    doc["predicate"]["body"] = {"x": 1}
    from computewatch.crypto.dsse import Envelope

    altered = Envelope(env.payload_type, canonical_json(doc), env.signatures)
    assert post(altered).status_code == 401
    # Malformed and oversized bodies.
    assert world.client.post("/v1/sessions", content=b"not json").status_code == 422
    assert world.client.post("/v1/sessions", content=b'{"payloadType":"x","payload":"","signatures":[]}').status_code == 422
    r = world.client.post("/v1/sessions", content=b"x" * (world.app.state.service.config.max_body + 1))
    assert r.status_code == 413
    assert (_rows(world, ss.nonces), _rows(world, ss.requests), _rows(world, ss.sessions)) == before  # nothing stored
    # Accepted once; the same envelope again is a replay.
    env = signed_request("session", {}, party="acme", key=world.keys["acme"], register=world.register)
    assert post(env).status_code == 200
    r = post(env)
    assert r.status_code == 403 and "replayed" in r.json()["error"]
    assert _rows(world, ss.sessions) == before[2] + 1
    # Wrong role: an owner cannot commit plans, mark explanations or record findings.
    for path, action, body in (("/v1/plans", "commit-plan", {"period": "p", "flops": 1e24}),
                               ("/v1/explanations/mark", "mark-explained", {}),
                               ("/v1/refusals", "refuse", {"serial": "x", "reason": "y"})):
        r = acme.write(path, action, body)
        assert r.status_code == 403 and "role" in r.json()["error"], r.text
    # An inspector cannot submit transcripts.
    assert world.as_party("insp").write("/v1/transcripts", "submit-transcript", {"export": {}}).status_code == 403


# ---------------------------------------------------------------------- custody
def test_old_nonces_are_pruned_and_their_requests_stay_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timedelta

    auth = world.app.state.service.auth
    def post(env: Any) -> Any:
        return world.client.post("/v1/sessions", content=env.to_json())

    env = signed_request("session", {}, party="acme", key=world.keys["acme"], register=world.register)
    assert post(env).status_code == 200
    kept = _rows(world, ss.nonces)
    # Twice the allowed skew later, the nonce is forgotten ...
    later = datetime.now(UTC) + timedelta(seconds=2 * world.app.state.service.config.max_skew_s + 5)
    with reg_db.write(auth._engine) as conn:
        assert auth.prune_nonces(conn, later) == kept > 0
    assert _rows(world, ss.nonces) == 0
    # ... and the same envelope replayed then is still refused, by its time alone.
    monkeypatch.setattr(auth, "_now", lambda: later)
    r = post(env)
    assert r.status_code == 401 and "clock" in r.json()["error"]
    # A recent nonce survives a prune.
    monkeypatch.undo()
    assert post(signed_request("session", {}, party="acme", key=world.keys["acme"], register=world.register)).status_code == 200
    with reg_db.write(auth._engine) as conn:
        assert auth.prune_nonces(conn, datetime.now(UTC)) == 0


def test_custody_transfer_and_report_through_the_service(world: World) -> None:
    from computewatch.registry import countersign, sign_statement

    serial, _ = world.report_chip(4, to="acme")
    stmt = world.reg.transfer_statement(serial, "beta")
    env = countersign(sign_statement(stmt, world.keys["acme"]), world.keys["beta"])
    # Only the giver's signature: refused, nothing changes.
    r = world.client.post("/v1/custody/transfers", content=sign_statement(stmt, world.keys["acme"]).to_json())
    assert r.status_code == 401 and "beta" in r.json()["error"]
    assert world.reg.holder(serial) == "acme"
    r = world.client.post("/v1/custody/transfers", content=env.to_json())
    assert r.status_code == 200, r.text
    assert world.reg.holder(serial) == "beta"
    r = world.client.post("/v1/custody/transfers", content=env.to_json())
    assert r.status_code == 403 and "already used" in r.json()["error"]  # the sequence number is single-use
    assert world.client.post("/v1/custody/reports", content=env.to_json()).status_code == 422  # a transfer, not a report
    assert world.client.post("/v1/custody/transfers", content=b"[]").status_code == 422
    rep = sign_statement(world.reg.report_statement(serial, "lost", reason="fell off a truck"), world.keys["acme"])
    assert world.client.post("/v1/custody/reports", content=rep.to_json()).status_code == 401  # acme no longer holds it
    rep = sign_statement(world.reg.report_statement(serial, "lost", reason="fell off a truck"), world.keys["beta"])
    r = world.client.post("/v1/custody/reports", content=rep.to_json())
    assert r.status_code == 200, r.text
    assert world.reg.chip(serial)["status"] == "lost"
    trail = world.as_party("beta").get(f"/v1/chips/{serial}").json()["custody"]
    assert [c["kind"] for c in trail] == ["create", "transfer", "transfer", "lost"]


# ---------------------------------------------------------------------- Provers
def _export(world: World, owner: str, run_id: str, key: SigningKey | None = None) -> dict:
    from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope, statement

    doc = {"v": 1, "kind": "computewatch/hashed-transcript", "run_id": run_id, "precommitment_digest": "ab" * 32,
           "steps": {"count": 4, "records_root": None, "batch_roots": []}, "snapshots": []}
    stmt = statement([("precommitment", {"blake3-256": "ab" * 32})], "urn:computewatch:hashed-transcript:v2", doc)
    return json.loads(sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), key or world.keys[owner]).to_json())


def test_transcripts_runs_and_scoped_reads(world: World) -> None:
    acme, beta, v = world.as_party("acme"), world.as_party("beta"), world.as_party("verifier")
    serial, _ = world.report_chip(5, to="acme")
    r = acme.write("/v1/transcripts", "submit-transcript", {"export": _export(world, "acme", "run-a")})
    assert r.status_code == 200, r.text
    tid = r.json()["transcript"]
    r = acme.write("/v1/transcripts", "submit-transcript", {"export": _export(world, "acme", "run-a")})
    assert r.status_code == 409  # the same transcript twice
    r = beta.write("/v1/transcripts", "submit-transcript", {"export": _export(world, "acme", "run-b")})
    assert r.status_code == 401 and "not signed by 'beta'" in r.json()["error"]  # acme's export, submitted by beta
    r = acme.write("/v1/transcripts", "submit-transcript", {"export": {"payload": 1}})
    assert r.status_code == 422
    assert [t["id"] for t in acme.get("/v1/transcripts").json()] == [tid]
    assert beta.get("/v1/transcripts").json() == []
    assert beta.get(f"/v1/transcripts/{tid}").status_code == 403
    assert v.get(f"/v1/transcripts/{tid}").json()["run_id"] == "run-a"
    assert v.get("/v1/transcripts/999").status_code == 404
    r = acme.write("/v1/runs", "declare-run", {"run_id": "run-a", "serials": [serial]})
    assert r.status_code == 200, r.text
    r = beta.write("/v1/runs", "declare-run", {"run_id": "run-b", "serials": [serial]})
    assert r.status_code in (403, 422)  # beta does not hold the chip
    assert world.client.get("/v1/runs").status_code == 401
    assert [x["run_id"] for x in acme.get("/v1/runs").json()] == ["run-a"]
    assert beta.get("/v1/runs").json() == []
    r = acme.write("/v1/runs", "declare-run", {"run_id": "x"})
    assert r.status_code == 422 and "missing" in r.json()["error"]


def test_jobs_are_validated_and_scoped(world: World) -> None:
    acme, beta, v = world.as_party("acme"), world.as_party("beta"), world.as_party("verifier")
    serial, _ = world.report_chip(0, to="acme")
    for who in ("acme", "beta"):
        run = world.data / "inputs" / who / "run"
        run.mkdir(parents=True)
        (run / "manifest.dsse.json").write_bytes(b"{}")
    for body, status in (({"runs": ["../x"], "chips": [{"serial": serial}]}, 403),
                         ({"runs": ["/etc"], "chips": [{"serial": serial}]}, 422),
                         ({"runs": ["inputs/acme/none"], "chips": [{"serial": serial}]}, 422),
                         ({"runs": ["inputs/acme/run"], "chips": [{"serial": serial}], "mode": "fast"}, 422),
                         ({"runs": ["inputs/acme/run"], "chips": [{"serial": serial}], "extra": 1}, 422)):
        r = acme.write("/v1/jobs", "verify", body)
        assert r.status_code == status, (body, r.text)
    # Another owner's uploads (run or chip folder) are not the submitter's to name.
    for body in ({"runs": ["inputs/beta/run"], "chips": [{"serial": serial}]},
                 {"runs": ["inputs/acme/run"], "chips": ["inputs/beta/run"]},
                 {"runs": ["inputs/acme/../beta/run"], "chips": [{"serial": serial}]},
                 {"runs": ["inputs/acme/run"], "chips": ["verdicts"]}):
        r = acme.write("/v1/jobs", "verify", body)
        assert r.status_code == 403 and "own inputs" in r.json()["error"], (body, r.text)
    r = beta.write("/v1/jobs", "verify", {"runs": ["inputs/beta/run"], "chips": [{"serial": serial}]})
    assert r.status_code == 403 and "not held" in r.json()["error"]
    assert _rows(world, ss.jobs) == 0
    r = acme.write("/v1/jobs", "verify", {"runs": ["inputs/acme/run"], "chips": [{"serial": serial}]})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    assert acme.get(f"/v1/jobs/{job}").json()["status"] == "queued"
    assert beta.get(f"/v1/jobs/{job}").status_code == 403
    assert beta.get("/v1/jobs").json() == []
    assert [j["id"] for j in v.get("/v1/jobs").json()] == [job]
    assert acme.get(f"/v1/jobs/{job}/verdict").status_code == 404  # not run yet
    assert acme.get(f"/v1/jobs/{job}/report").status_code == 404
    assert v.get("/v1/jobs/999").status_code == 404


# ---------------------------------------------------------------------- inspectors
def test_plans_inspections_refusals_and_the_queue(world: World) -> None:
    insp, acme, beta, v = world.as_party("insp"), world.as_party("acme"), world.as_party("beta"), world.as_party("verifier")
    serials = [world.reg.register_chip(world.onchip[i])["serial"] for i in range(3)]
    for s in serials:
        world.reg.ship(s, "acme", world.keys["maker"], world.keys["acme"])
    body = {"period": "2026-Q1", "flops": 1e24, "start": "2020-01-01T00:00:00Z", "T_m": 1, "owners": ["acme"]}
    r = insp.write("/v1/plans", "commit-plan", body)
    assert r.status_code == 200, r.text
    plan_id, seed = r.json()["plan"]["plan"], r.json()["seed"]
    assert insp.write("/v1/plans", "commit-plan", body).status_code == 409  # one plan per period and stockpile
    r = insp.write(f"/v1/plans/{plan_id}/draw", "draw-plan", {"plan": plan_id, "seed": seed})
    assert r.status_code == 200 and set(r.json()["chips"]) <= set(serials)
    r = insp.write(f"/v1/plans/{plan_id}/draw", "draw-plan", {"plan": plan_id + 1, "seed": seed})
    assert r.status_code == 401  # signed for another plan
    r = insp.write(f"/v1/plans/{plan_id}/reveal", "reveal-plan", {"plan": plan_id, "seed": "00" * 32})
    assert r.status_code in (409, 422)  # not the committed seed
    r = insp.write(f"/v1/plans/{plan_id}/reveal", "reveal-plan", {"plan": plan_id, "seed": seed})
    assert r.status_code == 200, r.text
    assert acme.get(f"/v1/plans/{plan_id}").status_code == 200
    assert [p["plan"] for p in acme.get("/v1/plans").json()] == [plan_id]
    # An inspection of a chip that ran: its snapshots join acme's queue.
    import shutil

    from computewatch.chip import Chip
    from computewatch.chip.exercise import run_steps, small_shard

    chip_dir = world.data / "presented" / "c0"
    shutil.copytree(world.onchip[0], chip_dir, symlinks=True)
    chip = Chip.open(chip_dir)
    chip.boot()
    chip.attach(small_shard(), world.root / "st")
    run_steps(chip, 6, 3600.0)
    chip.close()
    r = insp.write("/v1/inspections", "record-inspection", {"serial": serials[0], "chip_dir": "presented/c0", "plan": plan_id})
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "clean" and r.json()["queued"] > 0
    r = insp.write("/v1/inspections", "record-inspection", {"serial": serials[0], "chip_dir": "../../etc"})
    assert r.status_code == 403
    r = insp.write("/v1/refusals", "refuse", {"serial": serials[1], "reason": "the owner refused entry", "plan": plan_id})
    assert r.status_code == 200 and r.json()["outcome"] == "refused"
    assert insp.write("/v1/refusals", "refuse", {"serial": "CW-NOPE", "reason": "x"}).status_code == 404
    outcomes = {i["serial"]: i["outcome"] for i in acme.get("/v1/inspections").json()}
    assert outcomes == {serials[0]: "clean", serials[1]: "refused"}
    assert beta.get("/v1/inspections").json() == []
    # The queue: acme answers, beta cannot answer acme's snapshot, the Verifier marks it.
    queue = acme.get("/v1/explanations").json()
    assert queue and all(q["owner"] == "acme" for q in queue)
    assert beta.get("/v1/explanations").json() == []
    q = queue[0]
    r = beta.write("/v1/explanations", "explain", {"serial": q["serial"], "counter": q["counter"], "run_id": "r"})
    assert r.status_code == 404
    r = acme.write("/v1/explanations", "explain", {"serial": q["serial"], "counter": q["counter"], "run_id": "run-a", "note": "step"})
    assert r.status_code == 200, r.text
    assert acme.write("/v1/explanations", "explain", {"serial": q["serial"], "counter": q["counter"], "run_id": "x"}).status_code == 409
    r = v.write("/v1/explanations/mark", "mark-explained", {"serial": q["serial"], "counter": q["counter"], "status": "explained", "verdict_ref": "job:1"})
    assert r.status_code == 200 and r.json()["changed"] >= 1
    done = acme.get("/v1/explanations?status=all").json()
    mine = next(x for x in done if x["counter"] == q["counter"])
    assert mine["status"] == "explained" and mine["answer"]["run_id"] == "run-a"
    regime = v.get("/v1/regime").json()
    assert regime["plans"][0]["inspected"] == 2 and regime["plans"][0]["achieved_probability"] is not None


def _tar(files: dict[str, bytes], extra: list | None = None) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def test_uploads_of_raw_inputs(world: World) -> None:
    import tarfile

    acme, insp = world.as_party("acme"), world.as_party("insp")
    serial, _ = world.report_chip(1, to="acme")
    archive = _tar({"manifest.dsse.json": b"{}", "steps/rank-00000.jsonl": b""})
    r = acme.upload("run-1", archive)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "inputs/acme/run-1" and (world.data / "inputs/acme/run-1/manifest.dsse.json").read_bytes() == b"{}"
    r = acme.write("/v1/jobs", "verify", {"runs": ["inputs/acme/run-1"], "chips": [{"serial": serial}]})
    assert r.status_code == 200, r.text
    assert acme.upload("run-1", archive).status_code == 409  # names are not reused
    # The signature covers the body: another body under the same headers is refused; so is a replay.
    from computewatch.service.statements import read_headers

    h = read_headers("POST", "/v1/inputs/run-2", party="acme", key=world.keys["acme"], register=world.register, body=archive)
    other = _tar({"manifest.dsse.json": b"[]"})
    r = world.client.post("/v1/inputs/run-2", content=other, headers=h)
    assert r.status_code == 401 and "does not match" in r.json()["error"]
    from computewatch.service.httpsig import content_digest

    h2 = {**h, "Content-Digest": content_digest(other)}
    assert world.client.post("/v1/inputs/run-2", content=other, headers=h2).status_code == 401
    # The headers were checked (and their nonce spent) before the body was read.
    assert world.client.post("/v1/inputs/run-2", content=archive, headers=h).status_code == 403
    h = read_headers("POST", "/v1/inputs/run-2", party="acme", key=world.keys["acme"], register=world.register, body=archive)
    assert world.client.post("/v1/inputs/run-2", content=archive, headers=h).status_code == 200
    r = world.client.post("/v1/inputs/run-3", content=archive, headers=h)
    assert r.status_code in (401, 403)  # signed for run-2 (and its nonce is spent)
    assert world.client.post("/v1/inputs/run-2b", content=archive).status_code == 401  # unsigned
    assert insp.upload("x", archive).status_code == 403  # inspectors do not hand over runs
    assert acme.upload(".hidden", archive).status_code == 422
    # Hostile archives: a name escaping the folder, an absolute name, a link out; not a tar at all.
    up = tarfile.TarInfo("../escape")
    absolute = tarfile.TarInfo("/tmp/absolute")
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    for i, bad in enumerate((up, absolute, link)):
        r = acme.upload(f"bad-{i}", _tar({"ok": b"1"}, [bad]))
        assert r.status_code == 422, r.text
        assert not (world.data / "inputs/acme" / f"bad-{i}").exists()
    assert acme.upload("garbage", b"not a tar archive").status_code == 422
    assert not (world.data / "escape").exists() and not (world.data / "inputs" / "escape").exists()
    world.app.state.service.config.max_upload = 1000
    assert acme.upload("big", b"x" * 1001).status_code == 413
    leftovers = [p.name for p in (world.data / "inputs").rglob(".*")]
    assert leftovers == []  # no temp files or half-unpacked folders stay behind


# ---------------------------------------------------------------------- trust boundaries (issue 20)
def test_hostile_bodies_and_numbers_are_4xx_with_the_error_body_and_store_nothing(world: World) -> None:
    acme, insp, v = world.as_party("acme"), world.as_party("insp"), world.as_party("verifier")
    serial, _ = world.report_chip(2, to="acme")
    before = (_rows(world, ss.requests), _rows(world, ss.responses))
    plan = {"period": "2026-Q1", "flops": 1e24}
    bad_writes = [
        ("/v1/plans", "commit-plan", {**plan, "start": "9999-12-01T00:00:00Z"}, "start"),
        ("/v1/plans", "commit-plan", {**plan, "flops": "nan"}, "flops"),
        ("/v1/plans", "commit-plan", {**plan, "flops": "inf"}, "flops"),
        ("/v1/plans", "commit-plan", {**plan, "p": "0.9"}, "p"),
        ("/v1/plans", "commit-plan", {**plan, "group_by_facility": "no"}, "group_by_facility"),
        ("/v1/plans", "commit-plan", {**plan, "owners": ["acme", "acme"]}, "distinct"),
        ("/v1/plans/1/draw", "draw-plan", {"plan": 1, "seed": ["00"]}, "seed"),
        ("/v1/runs", "declare-run", {"run_id": "r", "serials": [serial], "precommitment": "not hex"}, "precommitment"),
        ("/v1/runs", "declare-run", {"run_id": "r", "serials": [serial], "precommitment": ["ab" * 32]}, "precommitment"),
        ("/v1/runs", "declare-run", {"run_id": "r", "serials": [serial, serial]}, "distinct"),
        ("/v1/explanations", "explain", {"serial": serial, "counter": -1, "run_id": "r"}, "counter"),
        ("/v1/explanations/mark", "mark-explained", {"serial": serial, "counter": 1, "status": "explained", "verdict_ref": "x",
                                                     "shard_digest": ["ab" * 32]}, "shard_digest"),
        ("/v1/jobs", "verify", {"runs": ["inputs/acme/run"], "chips": [{"serial": serial}], "segments": "9"}, "segments"),
    ]
    for path, action, body, word in bad_writes:
        who = v if action == "mark-explained" else insp if "plan" in action or action == "draw-plan" else acme
        r = who.write(path, action, body)
        assert r.status_code == 422, (action, body, r.text)
        assert set(r.json()) == {"error", "status"} and word in r.json()["error"], r.text
    # Numbers past 64 bits in paths and queries; unknown routes and methods: the same error body.
    for path in ("/v1/jobs/99999999999999999999999", "/v1/plans/123456789012345678901234567890",
                 "/v1/transcripts/-1", f"/v1/chips/{serial}/entries?start=99999999999999999999"):
        r = acme.get(path)
        assert r.status_code == 422 and set(r.json()) == {"error", "status"}, (path, r.text)
    r = world.client.get(f"/v1/chips/{serial}/proofs/inclusion", params={"index": 10**30})
    assert r.status_code == 422 and "error" in r.json()
    for method, path, status in (("GET", "/v1/nowhere", 404), ("POST", "/healthz", 405), ("DELETE", "/v1/chips", 405)):
        r = world.client.request(method, path)
        assert r.status_code == status and r.json() == {"error": r.json()["error"], "status": status}, r.text
    assert (_rows(world, ss.requests), _rows(world, ss.responses)) == before


def test_envelopes_with_many_signatures_are_refused_unread(world: World) -> None:
    from computewatch.crypto.dsse import Envelope
    from computewatch.service.auth import MAX_SIGNATURES

    env = signed_request("session", {}, party="acme", key=world.keys["acme"], register=world.register)
    junk = [("", b"\x00" * 64)] * 20_000
    r = world.client.post("/v1/sessions", content=Envelope(env.payload_type, env.payload, [*junk, *env.signatures]).to_json())
    assert r.status_code == 422 and f"at most {MAX_SIGNATURES}" in r.json()["error"]
    # A few are fine (a custody transfer has two signers).
    r = world.client.post("/v1/sessions", content=Envelope(env.payload_type, env.payload, [junk[0], *env.signatures]).to_json())
    assert r.status_code == 200, r.text


def test_party_names_are_safe_and_a_verifier_key_never_takes_over_a_party(world: World, tmp_path: Path) -> None:
    from computewatch.registry.errors import RegistryError
    from computewatch.service.app import build_service
    from computewatch.service.config import ServiceConfig

    for name in (".", "..", ".hidden", "a\\b", "a/b"):
        with pytest.raises(RegistryError):
            world.reg.add_owner(name, SigningKey.generate().public_key)
    # A Verifier key file named like a register party: the service refuses to start ...
    with pytest.raises(RegistryError, match="acme"):
        build_service(ServiceConfig(db_url=world.reg.url, data_dir=tmp_path / "d2", verifiers={"acme": world.keys["beta"].public_key}))
    # ... and a party registered later under a Verifier's name takes over nothing: both are refused.
    world.reg.add_owner("verifier", SigningKey.generate().public_key)
    r = world.as_party("verifier").get("/v1/me")
    assert r.status_code == 401 and "both" in r.json()["error"]


def test_a_resend_gets_the_stored_answer_and_applies_once(world: World) -> None:
    acme = world.as_party("acme")
    serial, _ = world.report_chip(4, to="acme")
    post = lambda env: world.client.post("/v1/runs", content=env.to_json())  # noqa: E731
    env = signed_request("declare-run", {"run_id": "r1", "serials": [serial]}, party="acme", key=world.keys["acme"], register=world.register)
    first, again = post(env), post(env)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert again.headers.get("X-CW-Resent") == "1" and "X-CW-Resent" not in first.headers
    assert [r["run_id"] for r in acme.get("/v1/runs").json()] == ["r1"]  # applied once
    # Another statement under the used nonce is a replay.
    other = signed_request("declare-run", {"run_id": "r2", "serials": [serial]}, party="acme", key=world.keys["acme"],
                           register=world.register, nonce=json.loads(env.payload)["predicate"]["nonce"])
    r = post(other)
    assert r.status_code == 403 and "replayed" in r.json()["error"]
    # A refusal the register decided is recorded too: the resend gets the same refusal.
    bad = signed_request("declare-run", {"run_id": "r3", "serials": ["CW-NOPE"]}, party="acme", key=world.keys["acme"], register=world.register)
    r1, r2 = post(bad), post(bad)
    assert r1.status_code == r2.status_code and r1.status_code in (404, 422) and r1.json() == r2.json()
    # A session token is never stored: its resend is refused.
    s = signed_request("session", {}, party="acme", key=world.keys["acme"], register=world.register)
    assert world.client.post("/v1/sessions", content=s.to_json()).status_code == 200
    r = world.client.post("/v1/sessions", content=s.to_json())
    assert r.status_code == 403 and "token" not in r.json()


def test_login_needs_this_sites_origin_logout_revokes_and_no_inline_script(world: World) -> None:
    from computewatch.service.jobs import JobStore

    acme = world.as_party("acme")
    token = acme.session()
    form = {"content": f"token={token}", "headers": {"content-type": "application/x-www-form-urlencoded"}}
    for headers in ({}, {"origin": "http://evil.example"}, {"referer": "http://evil.example/x"},
                    {"origin": "http://testserver", "sec-fetch-site": "cross-site"}):
        r = world.client.post("/login", content=form["content"], headers={**form["headers"], **headers}, follow_redirects=False)
        assert r.status_code == 403 and "cw_session" not in r.headers.get("set-cookie", ""), headers
    r = world.client.post("/login", content=form["content"], headers={**form["headers"], "origin": "http://testserver"}, follow_redirects=False)
    assert r.status_code == 303 and "cw_session" in r.headers["set-cookie"]
    # The job page polls through a static script; the CSP allows no inline script.
    job = JobStore(world.reg.engine, world.data)
    from computewatch.registry import db as reg_db2

    with reg_db2.write(world.reg.engine) as conn:
        job_id = job.create(conn, "acme", {"runs": [], "chips": [], "mode": "exact", "segments": 1})
    page = world.client.get(f"/jobs/{job_id}")
    csp = page.headers["content-security-policy"]
    assert page.status_code == 200 and "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "<script>" not in page.text and 'src="/static/job.js"' in page.text
    assert world.client.get("/static/job.js").status_code == 200
    # Logout revokes the token on the server: it reads nothing afterwards, cookie or bearer.
    assert world.client.get("/logout", follow_redirects=False).status_code == 303
    assert world.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    other = acme.session()
    assert world.client.delete("/v1/sessions", headers={"Authorization": f"Bearer {other}"}).json() == {"revoked": True}
    assert world.client.get("/v1/me", headers={"Authorization": f"Bearer {other}"}).status_code == 401


def test_an_unsigned_upload_is_refused_before_its_body_touches_the_disk(world: World) -> None:
    inputs = world.data / "inputs"
    body = b"\0" * (1 << 20)
    assert world.client.post("/v1/inputs/big", content=body).status_code == 401
    h = read_headers("POST", "/v1/inputs/big", party="acme", key=world.keys["beta"], register=world.register, body=body)
    assert world.client.post("/v1/inputs/big", content=body, headers=h).status_code == 401
    assert not inputs.exists() or not any(inputs.rglob("*")), sorted(inputs.rglob("*"))


def test_verdicts_name_no_server_paths() -> None:
    from computewatch.service.jobs import scrub_paths

    root = Path("/srv/computewatch")
    text = scrub_paths('{"run": "/srv/computewatch/inputs/acme/run", "data": "/srv/computewatch"}', root)
    assert "/srv" not in text and "inputs/acme/run" in text


def test_published_body_schemas_match_the_models() -> None:
    from computewatch.service.models import json_schemas

    folder = Path(__file__).resolve().parents[1] / "docs" / "schemas"
    for name, schema in json_schemas().items():
        doc = json.loads((folder / f"service-{name}.schema.json").read_text())
        assert {k: v for k, v in doc.items() if k not in ("$schema", "$id")} == schema, name
