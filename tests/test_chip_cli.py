"""`computewatch chip ...`: manufacture, attest, verify-attestation, show-log, verify-log."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from computewatch.cli import app

runner = CliRunner()
NONCE = "00112233445566778899aabbccddeeff"


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_manufacture_attest_verify_round_trip(tmp_path) -> None:
    out = tmp_path / "chip"
    r = _run("chip", "manufacture", "--out", str(out), "--serial", "CW-CLI-1")
    assert r.exit_code == 0, r.output
    assert "created a new chipmaker key" in r.output and "chipmaker.key" in r.output
    pub = tmp_path / "chipmaker" / "chipmaker.pub"
    ev = tmp_path / "ev.json"
    assert _run("chip", "attest", str(out), "--nonce", NONCE, "--out", str(ev)).exit_code == 0
    r = _run("chip", "verify-attestation", str(ev), "--nonce", NONCE, "--chipmaker-pub", str(pub), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["claims"]["serial"] == "CW-CLI-1"
    r = _run("chip", "verify-attestation", str(ev), "--nonce", "ff" * 16, "--chipmaker-pub", str(pub), "--json")
    assert r.exit_code == 1 and "nonce mismatch" in json.loads(r.stdout)["error"]
    r = _run("chip", "verify-attestation", str(ev), "--nonce", NONCE, "--chipmaker-pub", str(pub), "--serial", "CW-CLI-1")
    assert r.exit_code == 0 and "ok" in r.stdout
    # A second chip with the same chipmaker key file.
    r = _run("chip", "manufacture", "--out", str(tmp_path / "c2"), "--chipmaker-key", str(tmp_path / "chipmaker" / "chipmaker.key"))
    assert r.exit_code == 0, r.output
    other = tmp_path / "other.pub"
    _run("chip", "manufacture", "--out", str(tmp_path / "x" / "c3"))
    other.write_bytes((tmp_path / "x" / "chipmaker" / "chipmaker.pub").read_bytes())
    r = _run("chip", "verify-attestation", str(ev), "--nonce", NONCE, "--chipmaker-pub", str(other))
    assert r.exit_code == 1 and "chipmaker key" in r.output


def test_show_and_verify_log(tmp_path) -> None:
    out = tmp_path / "chip"
    _run("chip", "manufacture", "--out", str(out), "--serial", "CW-CLI-2")
    _run("chip", "attest", str(out), "--nonce", NONCE, "--out", str(tmp_path / "ev.json"))
    pub = str(tmp_path / "chipmaker" / "chipmaker.pub")
    r = _run("chip", "show-log", str(out))
    assert r.exit_code == 0 and "schedule-commit" in r.output and "checkpoint" in r.output
    r = _run("chip", "verify-log", str(out), "--chipmaker-pub", pub, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    # boot, schedule-commit, the checkpoint of the attestation, reveal, shutdown, checkpoint
    assert doc["ok"] is True and doc["entries"] == 6 and doc["problems"] == [] and doc["end"] == "clean-stop"
    log = out / "log" / "chip.log"
    lines = log.read_bytes().split(b"\n")
    log.write_bytes(b"\n".join([lines[0], lines[2], *lines[3:]]))
    r = _run("chip", "verify-log", str(out), "--chipmaker-pub", pub, "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and {"entry": 1} .items() <= doc["problems"][0].items()
    r = _run("chip", "verify-log", str(out), "--trust-chip-copy")
    assert r.exit_code == 1 and "entry 1" in r.output and "--trust-chip-copy" in r.output


def test_bad_input_gets_a_clear_error(tmp_path) -> None:
    r = _run("chip", "attest", str(tmp_path / "nochip"), "--nonce", NONCE, "--out", str(tmp_path / "e"))
    assert r.exit_code == 2 and "not a folder" in r.output
    r = _run("chip", "attest", str(tmp_path), "--nonce", "zz", "--out", str(tmp_path / "e"))
    assert r.exit_code == 2 and "not hex" in r.output
    r = _run("chip", "verify-log", str(tmp_path), "--chipmaker-pub", str(tmp_path / "missing.pub"))
    assert r.exit_code == 2 and "not a chip state directory" in r.output
    _run("chip", "manufacture", "--out", str(tmp_path / "chip"))
    r = _run("chip", "verify-log", str(tmp_path / "chip"), "--chipmaker-pub", str(tmp_path / "missing.pub"))
    assert r.exit_code == 2 and "does not exist" in r.output


def test_verify_log_against_earlier_evidence_catches_truncation(tmp_path) -> None:
    out = tmp_path / "chip"
    _run("chip", "manufacture", "--out", str(out), "--serial", "CW-CLI-3")
    log = out / "log" / "chip.log"
    _run("chip", "attest", str(out), "--nonce", NONCE, "--out", str(tmp_path / "ev1.json"))
    first_session = log.read_bytes()  # ends in a clean stop
    ev = tmp_path / "ev.json"
    _run("chip", "attest", str(out), "--nonce", NONCE, "--out", str(ev))
    pub = str(tmp_path / "chipmaker" / "chipmaker.pub")
    r = _run("chip", "verify-log", str(out), "--chipmaker-pub", pub, "--evidence", str(ev), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"], r.output
    assert json.loads(r.stdout)["not_checked"] == []
    log.write_bytes(first_session)  # cut back to the earlier clean stop
    r = _run("chip", "verify-log", str(out), "--chipmaker-pub", pub, "--json")
    assert r.exit_code == 0, r.output  # a clean prefix: only a head seen earlier shows the cut ...
    assert "no tree head seen earlier" in json.loads(r.stdout)["not_checked"][0]  # ... and the report says so
    r = _run("chip", "verify-log", str(out), "--chipmaker-pub", pub, "--evidence", str(ev), "--json")
    assert r.exit_code == 1 and "truncated" in r.output
    (tmp_path / "junk.json").write_text("[]")
    r = _run("chip", "verify-log", str(out), "--chipmaker-pub", pub, "--evidence", str(tmp_path / "junk.json"))
    assert r.exit_code == 2 and "not an evidence bundle" in r.output


def test_show_log_survives_malformed_bodies(tmp_path) -> None:
    out = tmp_path / "chip"
    _run("chip", "manufacture", "--out", str(out), "--serial", "CW-CLI-4")
    (out / "log").mkdir(exist_ok=True)
    entry = {"v": 1, "serial": "CW-CLI-4", "counter": 0, "boot": 1, "clock_ns": "9" * 400, "busy_ns": "0",
             "prev": "00" * 32, "kind": "snapshot", "body": {}, "sig": "AA=="}
    (out / "log" / "chip.log").write_bytes(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    r = _run("chip", "show-log", str(out))
    assert r.exit_code == 0 and "malformed" in r.output, r.output
