"""The location decision (`registry.locating.check`) case by case, without network or database:
each forged, stale, foreign or malformed piece of evidence is named by its check."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from computewatch.chip.chipmaker import Chipmaker
from computewatch.crypto.dsse import Envelope
from computewatch.crypto.errors import ComputewatchError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import envelope_to_obj
from computewatch.formats.location import Round, answer_input, make_evidence, sign_record
from computewatch.landmark.geo import distance_km
from computewatch.registry.locating import Landmark, LocatedChip, check

MAKER = Chipmaker(SigningKey.from_seed(b"m" * 32))
DEVICE, OTHER, LM = (SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
CERT = MAKER.certify("CW-A", DEVICE.public_key, "sim", 10**15)
OTHER_CERT = MAKER.certify("CW-B", OTHER.public_key, "sim", 10**15)
SITE = (48.1372, 11.5756)  # the facility; the landmark sits on it
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CHIP = LocatedChip("CW-A", DEVICE.public_key.raw, CERT.to_json(), MAKER.public_key, "dc", SITE)
MARKS = {LM.public_key.keyid: Landmark("muc", LM.public_key, SITE)}


def _record(*, key: SigningKey = LM, signer: SigningKey = DEVICE, serial: str = "CW-A", time: datetime = NOW,
            rtt_ns: int = 200_000, nonces: tuple[bytes, ...] = (b"\x01" * 32, b"\x02" * 32)) -> Envelope:
    lm = key.public_key.keyid
    rounds = [Round(n, signer.sign(answer_input(lm, serial, n)), rtt_ns) for n in nonces]
    return sign_record(key, serial, signer.public_key.raw, time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), rounds)


def _check(records: list[Envelope], *, cert: Envelope = CERT, chip: LocatedChip = CHIP, seen: set | None = None,
           radius: float = 500.0) -> dict:
    return check(make_evidence("CW-A", cert, records), chip, MARKS, seen or set(), radius_km=radius, now=NOW)


def _checks(doc: dict) -> list[str]:
    return [p["check"] for p in doc["problems"]]


def test_honest_evidence_is_inside_with_both_bounds() -> None:
    doc = _check([_record()])
    assert doc["inside"] and doc["finding"] is None
    b = doc["bounds_km"]["muc"]
    assert (b["rtt_ms"], b["fibre"], b["vacuum"]) == (0.2, 20.0, pytest.approx(29.979, abs=1e-3))
    assert doc["nonces"] == [(LM.public_key.keyid, "01" * 32), (LM.public_key.keyid, "02" * 32)]


@pytest.mark.parametrize(
    ("records", "kwargs", "expected"),
    [
        (lambda: [_record(time=NOW - timedelta(days=2))], {}, "stale"),
        (lambda: [_record(time=NOW + timedelta(hours=1))], {}, "stale"),
        (lambda: [_record()], {"cert": OTHER_CERT}, "certificate"),
        (lambda: [_record(serial="CW-B", signer=OTHER)], {}, "serial"),
        (lambda: [_record(signer=OTHER)], {}, "serial"),
        (lambda: [_record(key=SigningKey.from_seed(b"x" * 32))], {}, "landmark"),
        (lambda: [_record(nonces=(b"\x05" * 32, b"\x05" * 32))], {}, "replay"),
        (lambda: [_record()], {"seen": {(LM.public_key.keyid, "02" * 32)}}, "replay"),
        (lambda: [_record(rtt_ns=20_000_000)], {}, "radius"),
        (lambda: [], {}, "records"),
        (lambda: [_record()], {"chip": LocatedChip("CW-A", DEVICE.public_key.raw, b"", MAKER.public_key, None, None)}, "facility"),
    ],
)
def test_each_bad_piece_is_named(records, kwargs, expected: str) -> None:
    doc = _check(records(), **kwargs)
    assert not doc["inside"] and doc["problems"][0]["check"] == expected, doc["problems"]


def test_a_tampered_record_and_a_far_facility() -> None:
    rec = _record(rtt_ns=1_000_000)
    payload = json.loads(rec.payload)
    payload["predicate"]["rounds"][0]["rtt_ns"] = "1"  # the owner shortens a round trip
    forged = envelope_to_obj(rec)
    forged["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    doc = _check([Envelope.from_json(json.dumps(forged).encode())])
    assert _checks(doc)[0] in ("landmark", "format")
    far = LocatedChip("CW-A", DEVICE.public_key.raw, b"", MAKER.public_key, "dc", (52.52, 13.405))  # Berlin
    doc = _check([_record()], chip=far)
    assert "disc" in _checks(doc) and doc["bounds_km"]["muc"]["facility_km"] == pytest.approx(distance_km(SITE, (52.52, 13.405)), abs=0.01)
    with pytest.raises(ComputewatchError):
        check(b"not json", CHIP, MARKS, set(), now=NOW)
