"""The location evidence format's test vector (docs/formats.md "Location evidence"): a landmark
record and an evidence file made from fixed keys regenerate byte for byte and parse back."""

from __future__ import annotations

import hashlib
from pathlib import Path

from computewatch.crypto.dsse import Envelope, verify_envelope
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
