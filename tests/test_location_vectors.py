"""The location evidence format's test vector (docs/formats.md "Location evidence"): a landmark
record and an evidence file made from fixed keys regenerate byte for byte and parse back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import rfc8785

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, Envelope, sign_envelope, verify_envelope
from computewatch.crypto.errors import FormatError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.location import Round, answer_input, make_evidence, parse_evidence, read_record, sign_record

VECTORS = Path(__file__).parent / "vectors" / "computewatch" / "location"
LANDMARK = SigningKey.from_seed(bytes([0x11]) * 32)
DEVICE = SigningKey.from_seed(bytes([0x02]) * 32)  # the chip vectors' device key
SERIAL = "CW-VECTOR-0001"


def _record() -> Envelope:
    lm = LANDMARK.public_key.keyid
    rounds = []
    for i, rtt in enumerate((412_345, 398_001, 405_777)):
        nonce = bytes([i]) * 32
        rounds.append(Round(nonce, DEVICE.sign(answer_input(lm, SERIAL, nonce)), rtt))
    return sign_record(LANDMARK, SERIAL, DEVICE.public_key.raw, "2026-12-07T10:00:00.000000Z", rounds)


def test_location_vector_regenerates_and_parses() -> None:
    record = _record()
    assert record.to_json() == (VECTORS / "record.json").read_bytes()
    rec = read_record(Envelope.from_json((VECTORS / "record.json").read_bytes()))
    verify_envelope(rec.envelope, [LANDMARK.public_key])
    assert rec.rtt_ns == 398_001 and rec.serial == SERIAL and rec.device_key == DEVICE.public_key.raw
    for r in rec.rounds:
        DEVICE.public_key.verify(r.signature, answer_input(rec.landmark, SERIAL, r.nonce))
    quoted = hashlib.sha256(answer_input(rec.landmark, SERIAL, bytes(32))).hexdigest()
    assert quoted in (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    cert = Envelope.from_json((Path(__file__).parent / "vectors" / "computewatch" / "chip" / "certificate.json").read_bytes())
    evidence = make_evidence(SERIAL, cert, [record])
    assert evidence == (VECTORS / "evidence.json").read_bytes()
    assert parse_evidence(evidence)[0] == SERIAL
    # The record is location:v2, RFC 8785 per the `rfc8785` package (not ours).
    stmt = json.loads(record.payload)
    assert stmt["predicateType"] == "urn:computewatch:location:v2" and rfc8785.dumps(stmt) == record.payload


def test_legacy_v1_location_vector_still_reads() -> None:
    """Records signed before format version 2 (location:v1, canonical JSON version 1)."""
    rec = read_record(Envelope.from_json((VECTORS / "record-v1.json").read_bytes()))
    verify_envelope(rec.envelope, [LANDMARK.public_key])
    assert json.loads(rec.envelope.payload)["predicateType"] == "urn:computewatch:location:v1"
    assert rec.rtt_ns == 398_001 and rec.serial == SERIAL
    serial, _cert, records = parse_evidence((VECTORS / "evidence-v1.json").read_bytes())
    assert serial == SERIAL and read_record(records[0]).digest == rec.digest


def test_a_record_not_in_its_tags_encoding_is_refused() -> None:
    stmt = json.loads(_record().payload)
    stmt["predicate"]["x_float"] = 1e-05  # "1e-05" (v1) or "0.00001" (RFC 8785)
    for tag, encode in (("v1", rfc8785.dumps), ("v2", canonical_json)):
        stmt["predicateType"] = f"urn:computewatch:location:{tag}"
        with pytest.raises(FormatError, match="canonical JSON"):
            read_record(sign_envelope(PAYLOAD_TYPE_INTOTO, encode(stmt), LANDMARK))
