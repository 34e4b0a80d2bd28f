"""Location evidence: a landmark's signed record of round trips to a chip that signed its nonces.

A landmark (a registered party with a key and declared coordinates) sends a fresh 32-byte nonce;
the chip signs `answer_input(landmark keyid, serial, nonce)` with its certified device key; the
landmark measures the round trip from sending the nonce to receiving the answer, over several
rounds, and signs a record (DSSE, in-toto statement, predicate `urn:computewatch:location:v2` in
RFC 8785 canonical JSON; the legacy `urn:computewatch:location:v1`, canonical JSON version 1, is
still read):

    {"landmark": keyid, "serial", "device_key": hex, "time": ISO-8601 UTC,
     "rounds": [{"nonce": hex, "signature": base64, "rtt_ns": decimal string}, ...]}

subject `chip/<serial>` with `{"sha256": SHA-256 of the device key's raw bytes}`. The landmark
vouches only for what it saw (nonces, answers, times); whether the answers are the registered
chip's is the register's check. Evidence file (`computewatch chip locate --out`): canonical
JSON `{"v": 1, "serial", "certificate": envelope, "records": [envelope, ...]}`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json, canonical_json_v2
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, Envelope, predicate_type, sign_envelope, statement
from computewatch.crypto.dsse import parse_statement as parse_intoto
from computewatch.crypto.errors import FormatError
from computewatch.crypto.signing import SigningKey
from computewatch.formats.chip_entry import b64, decimal, envelope_from_obj, envelope_to_obj, from_b64, from_hex

__all__ = [
    "PRED_LOCATION",
    "PRED_LOCATION_V1",
    "LocationRecord",
    "Round",
    "answer_input",
    "make_evidence",
    "parse_evidence",
    "read_record",
    "sign_record",
]

PRED_LOCATION = predicate_type("location", 2)
PRED_LOCATION_V1 = predicate_type("location", 1)  # legacy: read, never written
_VERSIONS = {PRED_LOCATION_V1: 1, PRED_LOCATION: 2}  # predicate type -> canonical JSON version
_ANSWER_CONTEXT = "computewatch location answer v1"


def answer_input(landmark: str, serial: str, nonce: bytes) -> bytes:
    """The bytes a chip signs to answer a landmark's nonce: bound to that landmark and serial, so
    an answer is good for one challenge of one landmark to one chip."""
    return canonical_json({"ctx": _ANSWER_CONTEXT, "landmark": landmark, "serial": serial, "nonce": nonce.hex()})


@dataclass(frozen=True)
class Round:
    nonce: bytes
    signature: bytes
    rtt_ns: int

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce.hex(), "signature": b64(self.signature), "rtt_ns": str(self.rtt_ns)}


@dataclass(frozen=True)
class LocationRecord:
    """A landmark's record, as signed (the signature is checked by whoever trusts the landmark)."""

    landmark: str  # key id of the landmark that signed
    serial: str
    device_key: bytes
    time: str
    rounds: tuple[Round, ...]
    envelope: Envelope

    @property
    def rtt_ns(self) -> int:
        """The shortest round trip: every round bounds the distance, the shortest most tightly."""
        return min(r.rtt_ns for r in self.rounds)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.envelope.to_json()).hexdigest()


def sign_record(key: SigningKey, serial: str, device_key: bytes, time: str, rounds: list[Round]) -> Envelope:
    predicate = {
        "landmark": key.public_key.keyid,
        "serial": serial,
        "device_key": device_key.hex(),
        "time": time,
        "rounds": [r.to_json() for r in rounds],
    }
    stmt = statement([(f"chip/{serial}", {"sha256": hashlib.sha256(device_key).hexdigest()})], PRED_LOCATION, predicate)
    return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json_v2(stmt), key)


def read_record(env: Envelope) -> LocationRecord:
    """Parse a record's statement (its signature is NOT checked here: see the register)."""
    if env.payload_type != PAYLOAD_TYPE_INTOTO:
        raise FormatError(f"location record: payload type {env.payload_type!r} is not in-toto")
    try:
        stmt, _version = parse_intoto(env.payload, _VERSIONS)  # one encoding per predicate type
    except FormatError as exc:
        raise FormatError(f"location record: {exc}") from None
    p = stmt.get("predicate")
    if not isinstance(p, dict) or not isinstance(p.get("rounds"), list) or not p["rounds"]:
        raise FormatError("location record: the predicate holds no rounds")
    try:
        rounds = tuple(
            Round(from_hex(r["nonce"], "nonce", 32), from_b64(r["signature"], "signature"), decimal(r["rtt_ns"], "rtt_ns"))
            for r in p["rounds"]
        )
        landmark, serial, time = p["landmark"], p["serial"], p["time"]
        device_key = from_hex(p["device_key"], "device_key", 32)
    except (KeyError, TypeError) as exc:
        raise FormatError(f"location record: malformed predicate ({exc})") from None
    if not all(isinstance(x, str) for x in (landmark, serial, time)):
        raise FormatError("location record: landmark, serial and time are strings")
    return LocationRecord(landmark, serial, device_key, time, rounds, env)


def make_evidence(serial: str, certificate: Envelope, records: list[Envelope]) -> bytes:
    return canonical_json({"v": 1, "serial": serial, "certificate": envelope_to_obj(certificate),
                           "records": [envelope_to_obj(r) for r in records]})


def parse_evidence(data: bytes) -> tuple[str, Envelope, list[Envelope]]:
    """(serial, chip certificate envelope, record envelopes); a malformed file raises FormatError."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise FormatError("location evidence: not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise FormatError("location evidence: not a version-1 evidence file")
    if not isinstance(doc.get("serial"), str) or not isinstance(doc.get("records"), list):
        raise FormatError("location evidence: needs a serial and a list of records")
    cert = envelope_from_obj(doc.get("certificate"), "certificate")
    return doc["serial"], cert, [envelope_from_obj(r, f"record {i}") for i, r in enumerate(doc["records"])]
