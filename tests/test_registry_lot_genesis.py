"""A whole lot's chips keep their creation record once per lot (revision 0005, docs/registry.md
"Lots"): every register query answers as if each chip had its own row, the custody hash chain
is unchanged, a register written before the revision keeps working, and a process killed
inside a lot leaves nothing of it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select, text

from computewatch.crypto.signing import SigningKey
from computewatch.formats.identity import issue_chip_certificate
from computewatch.formats.lot import certificate_claims, issue_lot
from computewatch.registry import Registry
from computewatch.registry import db as regdb
from computewatch.registry import schema as s
from computewatch.registry.custody import GENESIS, custody_record, record_digest

MAKER = SigningKey.from_seed(b"\x61" * 32)
ACME = SigningKey.from_seed(b"\x62" * 32)
_T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _certs(n: int, tag: str = "G") -> list[bytes]:
    return [issue_chip_certificate(MAKER, f"CW-{tag}-{i:03d}", SigningKey.from_seed(f"{tag}{i}".encode().ljust(32, b"\0"))
                                   .public_key, "computewatch-sim-h100", 989 * 10**12).to_json() for i in range(n)]


def _answers(reg: Registry, serials: list[str]) -> dict[str, object]:
    """What the register's queries say about these chips."""
    plan, _ = reg.commit_plan("p1", ["maker", "acme"], flops=1e24, seed=b"\x07" * 32)
    return {
        "chips": [reg.chip(x) for x in serials],
        "custody": [reg.verify_custody(x) for x in serials],
        "items": reg.items(), "maker": reg.items(holder="maker"), "acme": reg.items(holder="acme"),
        "plan": {k: v for k, v in plan.items() if k != "plan"},
        "exposure": reg.exposure("p1"),
    }


def test_a_whole_lot_answers_every_query_as_chip_by_chip_registration(tmp_path) -> None:
    certs = _certs(6)
    serials = [certificate_claims(c).serial for c in certs]
    env, proofs = issue_lot(MAKER, "LOT-G", "maker", certs)
    setup = Registry.open(f"sqlite:///{tmp_path / 'a.db'}", clock=lambda: _T)
    setup.add_chipmaker("maker", MAKER.public_key)
    setup.add_owner("acme", ACME.public_key)
    setup.close()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")  # one register id: the same record digests
    whole = Registry.open(f"sqlite:///{tmp_path / 'a.db'}", clock=lambda: _T)
    single = Registry.open(f"sqlite:///{tmp_path / 'b.db'}", clock=lambda: _T)
    whole.register_lot(env.to_json(), certs, workers=0, batch=4)
    for cert, proof in zip(certs, proofs, strict=True):
        single.register_lot_chip(env.to_json(), cert, proof)
    with whole.engine.connect() as conn:  # the lot keeps the creation record once: no row per chip
        assert conn.execute(select(func.count()).select_from(s.custody)).scalar_one() == 0
    for reg in (whole, single):  # custody goes on from there: the chain continues from the lot's record
        reg.ship(serials[1], "acme", MAKER, ACME)
    a, b = _answers(whole, serials), _answers(single, serials)
    assert a == b
    chip = a["chips"][1]  # type: ignore[index]
    assert [r["kind"] for r in chip["custody"]] == ["create", "transfer"]
    assert chip["custody"][0]["note"] == "certified by maker in lot LOT-G"
    assert all(v["ok"] for v in a["custody"])  # type: ignore[attr-defined]
    expected = record_digest(custody_record(
        register=whole.register_id, label=serials[0], seq=0, kind="create", from_name=None, to_name="maker",
        facility=None, statement=None, note="certified by maker in lot LOT-G", recorded_at=chip["registered_at"],
        prev=GENESIS))
    assert a["chips"][0]["custody"][0]["record_digest"] == expected  # type: ignore[index]
    whole.close()
    single.close()


def test_an_altered_lot_record_breaks_the_custody_chain(tmp_path) -> None:
    # The creation record is read back from the lot's row: changing that row is seen by
    # verify_custody for a chip whose later records chain onto the original digest.
    certs = _certs(2, "H")
    env, _ = issue_lot(MAKER, "LOT-H", "maker", certs)
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    reg.add_chipmaker("maker", MAKER.public_key)
    reg.add_owner("acme", ACME.public_key)
    reg.register_lot(env.to_json(), certs, workers=0)
    reg.ship("CW-H-000", "acme", MAKER, ACME)
    assert reg.verify_custody("CW-H-000")["ok"]
    with reg.engine.begin() as conn:
        conn.execute(s.chip_lots.update().values(registered_at="2020-01-01T00:00:00.000000Z"))
    check = reg.verify_custody("CW-H-000")
    assert not check["ok"] and "record 1" in " ".join(check["problems"])
    reg.close()


def test_a_register_written_before_revision_0005_keeps_working(db_url) -> None:
    # A lot registered at revision 0004 stored a creation row per chip; after the upgrade those
    # chips read exactly as before, take new custody records, and new lots go in beside them.
    engine = regdb.make_engine(db_url)
    regdb.upgrade(engine, "0004_locations")
    certs = _certs(3, "O")
    env, _ = issue_lot(MAKER, "LOT-O", "maker", certs)
    t0 = "2026-02-01T00:00:00.000000Z"
    note = "certified by maker in lot LOT-O"
    with engine.begin() as conn:  # what register_lot wrote at revision 0004
        register = conn.execute(text("SELECT value FROM register_meta WHERE key = 'register_id'")).scalar_one()
        maker = conn.execute(insert(s.parties).values(name="maker", role="chipmaker", public_key=MAKER.public_key.raw,
                                                      keyid=MAKER.public_key.keyid, info="{}", created_at=t0)
                             .returning(s.parties.c.id)).scalar_one()
        conn.execute(insert(s.chip_lots).values(chipmaker_id=maker, label="LOT-O", count=3, root="00" * 32,
                                                manifest=env.to_json(), registered_at=t0))
        for cert in certs:
            c = certificate_claims(cert)
            item = conn.execute(insert(s.items).values(
                kind="chip", label=c.serial, chipmaker_id=maker, holder_id=maker, custody_seq=0, status="active",
                device_key=c.device_key, model=c.model, peak_flops=c.peak_flops, certificate=cert, registered_at=t0,
            ).returning(s.items.c.id)).scalar_one()
            digest = record_digest(custody_record(register=register, label=c.serial, seq=0, kind="create",
                                                  from_name=None, to_name="maker", facility=None, statement=None,
                                                  note=note, recorded_at=t0, prev=GENESIS))
            conn.execute(insert(s.custody).values(item_id=item, seq=0, kind="create", to_id=maker, note=note,
                                                  recorded_at=t0, record_digest=digest))
    engine.dispose()
    reg = Registry.open(db_url)
    chip = reg.chip("CW-O-001")
    assert [(r["seq"], r["note"], r["recorded_at"]) for r in chip["custody"]] == [(0, note, t0)]
    assert reg.verify_custody("CW-O-001")["ok"]
    reg.add_owner("acme", ACME.public_key)
    reg.ship("CW-O-001", "acme", MAKER, ACME)
    assert reg.verify_custody("CW-O-001") | {"head": None} == {"serial": "CW-O-001", "ok": True, "records": 2,
                                                               "head": None, "problems": []}
    fresh = _certs(2, "N")
    new_env, _ = issue_lot(MAKER, "LOT-N", "maker", fresh)
    reg.register_lot(new_env.to_json(), fresh, workers=0)
    assert [r["holder"] for r in reg.items()] == ["maker", "maker", "maker", "acme", "maker"]
    assert reg.verify_custody("CW-N-001")["ok"] and reg.chip("CW-N-001")["custody"][0]["note"] == \
        "certified by maker in lot LOT-N"
    reg.close()


@pytest.mark.parametrize("workers", [0, 1])
def test_lot_chips_point_at_their_lot(tmp_path, workers) -> None:
    certs = _certs(5, "W")
    env, _ = issue_lot(MAKER, "LOT-W", "maker", certs)
    reg = Registry.open(f"sqlite:///{tmp_path / 'w.db'}", clock=lambda: _T)
    reg.add_chipmaker("maker", MAKER.public_key)
    reg.add_fab("fab-1", SigningKey.from_seed(b"\x63" * 32).public_key)
    reg.register_lot(env.to_json(), certs, workers=workers, batch=2, fab="fab-1")
    with reg.engine.connect() as conn:
        lot_id = conn.execute(select(s.chip_lots.c.id)).scalar_one()
        rows = conn.execute(select(s.items.c.genesis_lot_id, s.items.c.certificate).order_by(s.items.c.id)).all()
    assert [r.genesis_lot_id for r in rows] == [lot_id] * 5 and [bytes(r.certificate) for r in rows] == certs
    # The columns the whole lot shares (written once per statement) read back per chip.
    chip = reg.chip("CW-W-003")
    assert (chip["kind"], chip["status"], chip["fab"], chip["chipmaker"], chip["holder"], chip["custody_seq"],
            chip["registered_at"]) == ("chip", "active", "fab-1", "maker", "maker", 0, "2026-03-01T12:00:00.000000Z")
    reg.close()


_LOT = r"""
import sys
from pathlib import Path
from computewatch.registry import Registry
url, folder = sys.argv[1], Path(sys.argv[2])
reg = Registry.open(url)
certs = (folder / "certs.jsonl").read_bytes().splitlines()
reg.register_lot((folder / "lot.json").read_bytes(), certs, workers=0, batch=2)
"""


def test_a_process_killed_inside_a_lot_registers_nothing(db_url, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import time

    from _faults import faulty

    certs = _certs(8, "K")
    env, _ = issue_lot(MAKER, "LOT-K", "maker", certs)
    (tmp_path / "certs.jsonl").write_bytes(b"\n".join(certs) + b"\n")
    (tmp_path / "lot.json").write_bytes(env.to_json())
    reg = Registry.open(db_url)
    reg.add_chipmaker("maker", MAKER.public_key)
    pause = tmp_path / "pause"
    pause.mkdir()
    victim = subprocess.Popen([*faulty(f"pause=lot:{pause}"), "-c", _LOT, db_url, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 60
    while not (pause / "paused").exists():  # the first piece's rows are written, nothing committed
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline, "the lot never reached its pause point"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert reg.items() == []
    with reg.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.chip_lots)).scalar_one() == 0
        if reg.engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    # The whole lot then goes in, exactly once.
    assert reg.register_lot(env.to_json(), certs, workers=0)["chips"] == 8 and len(reg.items()) == 8
    reg.close()
