"""Attestation evidence: verifies under the chipmaker root with the right nonce, fails otherwise."""

from __future__ import annotations

import json

import pytest

from computewatch.chip import AttestationError, Chip, verify_attestation
from _chips import booted_chip, run_steps
from computewatch.crypto.signing import SigningKey

NONCE = bytes(range(16))


@pytest.fixture()
def chip(tmp_path) -> Chip:
    c = booted_chip(tmp_path, rate=50.0, count=2)
    run_steps(c, 4, 3600.0)
    return c


def test_fresh_evidence_verifies_and_reports_the_chip_state(chip) -> None:
    claims = verify_attestation(chip.attest(NONCE), NONCE, chip.chipmaker_root, min_security_version=1)
    assert claims.serial == chip.serial
    assert claims.firmware_measurement == chip.firmware.measurement.hex()
    assert claims.security_version == claims.fuse_security_version == 1
    assert claims.log_size == len(chip.log) and claims.log_root == chip.log.root()
    assert claims.clock["reset_count"] == 1 and claims.clock["safe"] is True
    assert int(claims.clock["busy_ns"]) == 4 * 3600 * 10**9
    assert claims.tamper is False


def test_stale_nonce_fails(chip) -> None:
    old = chip.attest(b"old-challenge-00")
    with pytest.raises(AttestationError, match="nonce mismatch"):
        verify_attestation(old, NONCE, chip.chipmaker_root)


def test_wrong_chipmaker_key_fails(chip) -> None:
    with pytest.raises(AttestationError, match="chipmaker key"):
        verify_attestation(chip.attest(NONCE), NONCE, SigningKey.generate().public_key)


def test_evidence_under_another_chips_key_fails(chip) -> None:
    other = Chip.open(chip.state_dir.parent / "chip-0001")
    other.boot()
    mine, theirs = json.loads(chip.attest(NONCE)), json.loads(other.attest(NONCE))
    mine["evidence"] = theirs["evidence"]  # another chip's signed claims under my certificate
    with pytest.raises(AttestationError, match="boot key"):
        verify_attestation(mine, NONCE, chip.chipmaker_root)
    mine = json.loads(chip.attest(NONCE))
    mine["boot_certificate"] = theirs["boot_certificate"]
    with pytest.raises(AttestationError, match="boot certificate"):
        verify_attestation(mine, NONCE, chip.chipmaker_root)


def test_tampered_claims_and_old_firmware_fail(chip) -> None:
    doc = json.loads(chip.attest(NONCE))
    payload = doc["evidence"]["payload"]
    doc["evidence"]["payload"] = payload[:-8] + ("A" * 8 if payload[-8:] != "A" * 8 else "B" * 8)
    with pytest.raises(AttestationError):
        verify_attestation(doc, NONCE, chip.chipmaker_root)
    with pytest.raises(AttestationError, match="below the required 2"):
        verify_attestation(chip.attest(NONCE), NONCE, chip.chipmaker_root, min_security_version=2)
    with pytest.raises(AttestationError):
        verify_attestation(b"not json", NONCE, chip.chipmaker_root)


def test_tamper_flag_is_sticky_and_read_at_inspection(chip) -> None:
    chip.trip_tamper("enclosure opened")
    claims = verify_attestation(chip.inspect(NONCE), NONCE, chip.chipmaker_root)
    assert claims.tamper is True
    chip.close()
    again = Chip.open(chip.state_dir)
    assert again.tamper
    again.boot()
    assert verify_attestation(again.attest(NONCE), NONCE, again.chipmaker_root).tamper
    assert any(e.kind == "tamper" for e in again.log)
    again.close()
    report = again.audit()
    assert report.ok and any("tamper sensor fired" in w.problem for w in report.warnings)


def _resigned(chip: Chip, mutate) -> dict:
    """Evidence whose statement was changed and signed again with the (leaked) boot key: the
    checks behind the signature must still hold."""
    from _chips import leak_boot_key
    from computewatch.crypto.canonical import canonical_json
    from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, Envelope, sign_envelope
    from computewatch.formats.chip_entry import envelope_to_obj

    doc = json.loads(chip.attest(NONCE))
    stmt = json.loads(Envelope.from_json(json.dumps(doc["evidence"])).payload)
    mutate(stmt)
    env = sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), leak_boot_key(chip))
    doc["evidence"] = envelope_to_obj(env)
    return doc


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda s: s.update(predicate=[1]), "predicate is not a JSON object"),
        (lambda s: s.update(predicateType=None) or s.__setitem__("predicate", "x"), "predicate type"),
        (lambda s: s["predicate"].pop("log"), "claims malformed"),
        (lambda s: s["predicate"].update(firmware="x"), "measurement differs"),
        (lambda s: s["predicate"].update(tamper="no"), "claims malformed"),
        (lambda s: s["predicate"].update(boot=7), "boot certificate is for boot 1"),
        (lambda s: s["subject"][0]["digest"].update(sha256="00" * 32), "subject"),
        (lambda s: s["predicate"].update(fuse_security_version=0), "fuse 0 is below"),
    ],
)
def test_resigned_malformed_or_inconsistent_claims_are_refused(chip, mutate, why) -> None:
    with pytest.raises(AttestationError, match=why):
        verify_attestation(_resigned(chip, mutate), NONCE, chip.chipmaker_root)
