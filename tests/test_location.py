"""Location by signed round trips, on SQLite and PostgreSQL: a landmark on 127.0.0.1 times a
chip's signed answers; `chip locate` writes the evidence and logs each record; `registry locate`
checks both signatures and the chip certificate, derives both distance bounds and decides whether
the declared facility lies inside every disc and the radius; results are stored, nonces are used
up, a finding flags the holder and becomes an inspection problem. Distances and bounds by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from computewatch.adversary.location import HOME, LANDMARK_SITE, DelayingRelay, relay_delay_s
from computewatch.chip import Chip
from computewatch.cli import app
from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import split_log
from computewatch.landmark import FIBRE_KM_PER_MS, VACUUM_KM_PER_MS, LandmarkServer, bound_km, distance_km

runner = CliRunner()
KEY = SigningKey.from_seed(b"L" * 32)


def _run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def landmark() -> Iterator[LandmarkServer]:
    with LandmarkServer(KEY, rounds=5) as server:
        yield server


@pytest.fixture
def home(registry, tmp_path: Path):
    """A register with landmark `ams` and acme's facility `home`, and a chip of acme there."""
    reg = registry.reg
    reg.add_landmark("ams", KEY.public_key, *LANDMARK_SITE)
    reg.set_facility_site("acme", "home", *HOME)
    chip = registry.fresh_chip(0)
    serial = reg.register_chip(chip)["serial"]
    reg.ship(serial, "acme", registry.keys["maker"], registry.keys["acme"], facility="home")
    return registry, serial, chip


def test_distances_and_bounds_by_hand() -> None:
    assert distance_km((48.8566, 2.3522), (52.3676, 4.9041)) == pytest.approx(430, abs=5)  # Paris - Amsterdam
    assert distance_km((0.0, 0.0), (0.0, 180.0)) == pytest.approx(20015, abs=5)  # half the equator
    b = bound_km(2_000_000)  # 2 ms round trip
    assert (b.rtt_ms, b.fibre_km) == (2.0, 200.0) and b.vacuum_km == pytest.approx(299.79, abs=0.01)
    assert FIBRE_KM_PER_MS == 100.0 and VACUUM_KM_PER_MS == pytest.approx(149.9, abs=0.1)


def test_a_chip_at_home_is_inside_and_its_evidence_is_stored_and_logged(home, landmark, tmp_path: Path) -> None:
    world, serial, chip = home
    db = world.reg.engine.url.render_as_string(hide_password=False)
    evidence = tmp_path / "evidence.json"
    r = _run("chip", "locate", chip, "--landmark", landmark.url, "--out", evidence)
    assert r.exit_code == 0, r.output
    # A generous radius: on a loaded test machine a thread switch can add milliseconds.
    r = _run("registry", "locate", serial, "--evidence", evidence, "--radius-km", 1000, "--db", db, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["inside"] is True and doc["finding"] is None and doc["facility"] == "home"
    ams = doc["bounds_km"]["ams"]
    assert 0 < ams["fibre"] < ams["vacuum"] <= doc["radius_km"] == 1000 and ams["facility_km"] < 0.2
    assert doc["speed_km_per_ms"] == {"fibre": 100.0, "vacuum": pytest.approx(149.896, abs=1e-3)}
    assert doc["proven_within_km"]["vacuum"] == pytest.approx(ams["vacuum"] + ams["facility_km"], abs=1e-2)
    stored = world.reg.locations(serial)
    assert [(s["inside"], s["id"]) for s in stored] == [(True, doc["id"])] and world.reg.chip(serial)["locations"] == stored
    for sql in ("UPDATE locations SET outcome = 'finding'", "DELETE FROM location_nonces"):
        # a used nonce can never be freed again
        with pytest.raises(DBAPIError, match="append-only"), world.reg.engine.begin() as conn:
            conn.execute(text(sql))
    # The chip's log holds the landmark's record, by digest, and still audits clean.
    lines, _ = split_log((chip / "log" / "chip.log").read_bytes())
    logged = [json.loads(x) for x in lines if json.loads(x)["kind"] == "location"]
    assert [e["body"]["record_sha256"] for e in logged] == [ams["record_sha256"]]
    assert Chip.open(chip).audit().ok
    # The same evidence again is a replay: a finding, the holder flagged, the next inspection too.
    again = _run("registry", "locate", serial, "--evidence", evidence, "--db", db, "--json")
    assert again.exit_code == 1 and json.loads(again.stdout)["problems"][0]["check"] == "replay"
    assert again.stderr.startswith("error:") and "replayed" in again.stderr
    assert any(f["kind"] == "location" for f in world.reg.flags("acme"))
    inspected = world.reg.record_inspection(serial, chip)
    assert inspected["outcome"] == "finding" and [p["check"] for p in inspected["problems"]] == ["location"]
    assert world.reg.verify_inspection(inspected["inspection"])["ok"]


def test_a_relay_at_home_in_front_of_a_chip_abroad_is_outside_the_radius(home, landmark) -> None:
    from computewatch.landmark.locate import locate_chip

    world, serial, chip = home
    relay = DelayingRelay(landmark.url, relay_delay_s(1500.0))
    try:
        evidence = locate_chip(chip, [relay.url])
    finally:
        relay.close()
    doc = world.reg.locate(serial, evidence)
    assert not doc["inside"] and [p["check"] for p in doc["problems"]] == ["radius"]
    assert doc["bounds_km"]["ams"]["fibre"] >= 1500  # delay cannot be removed: the bound covers the real distance
    # Declared far from every landmark: outside the disc even in vacuum.
    world.reg.set_facility_site("acme", "home", 39.9042, 116.4074)
    far = world.reg.locate(serial, locate_chip(chip, [landmark.url]))
    assert "disc" in [p["check"] for p in far["problems"]] and "not there" in far["finding"]


def test_bad_input_is_one_line_and_exit_2(home, landmark, tmp_path: Path) -> None:
    world, serial, chip = home
    db = world.reg.engine.url.render_as_string(hide_password=False)
    junk = tmp_path / "junk.json"
    junk.write_text("[]")
    r = _run("registry", "locate", serial, "--evidence", junk, "--db", db, "--json")
    assert r.exit_code == 2 and "unusable" in json.loads(r.stdout)["error"]
    r = _run("registry", "locate", "CW-NOPE", "--evidence", junk, "--db", db)
    assert r.exit_code == 2 and "CW-NOPE" in r.stderr
    r = _run("chip", "locate", chip, "--landmark", "http://127.0.0.1:1", "--out", tmp_path / "e.json")
    assert r.exit_code == 2 and "tcp://HOST:PORT" in r.stderr and not (tmp_path / "e.json").exists()
    r = _run("registry", "add-landmark", "x", "--pub", tmp_path / "missing.pem", "--lat", 91, "--lon", 0, "--db", db)
    assert r.exit_code == 2
    with pytest.raises(Exception, match="latitude"):
        world.reg.add_landmark("bad", SigningKey.generate().public_key, 91.0, 0.0)


def test_landmark_serve_from_the_command_line(registry_chips, tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    from computewatch.formats.location import parse_evidence, read_record

    key = tmp_path / "landmark.key"
    KEY.save(key)
    proc = subprocess.Popen([sys.executable, "-m", "computewatch", "landmark", "serve", "--key", str(key), "--port", "0",
                             "--rounds", "2"], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = line.split("listening on ")[1].strip()
        assert url.startswith("tcp://127.0.0.1:")
        chip = Path(shutil.copytree(registry_chips[1][2], tmp_path / "chip"))
        out = tmp_path / "ev.json"
        r = _run("chip", "locate", chip, "--landmark", url, "--out", out, "--json")
        assert r.exit_code == 0, r.output
        [record] = parse_evidence(out.read_bytes())[2]
        assert read_record(record).landmark == KEY.public_key.keyid and len(read_record(record).rounds) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
