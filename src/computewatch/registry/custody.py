"""Custody statements and records (docs/registry.md, "Custody statements").

A transfer is a DSSE envelope over an in-toto Statement v1 with predicate type
`urn:computewatch:custody-transfer:v2`, signed by the giving holder and countersigned by the
receiver: two signatures over the same pre-authentication encoding. A loss, damage or
destruction report (`urn:computewatch:custody-report:v2`) is signed by the holder alone. The v2
types are in canonical JSON version 2 (RFC 8785); the legacy v1 types (version 1 canonical JSON)
stay readable, so statements the register stored before still re-verify. Both
carry the register's id and the item's next custody sequence number, so a signature cannot be
replayed: not at another register, not for another item, not a second time.

The register keeps every change as a custody record whose digest chains to the item's previous
record (`record_digest`), so an exported history can be checked end to end.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from computewatch.crypto.canonical import canonical_json, canonical_json_at
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    pae,
    predicate_type,
    sign_envelope,
    statement,
)
from computewatch.crypto.dsse import parse_statement as parse_intoto_statement
from computewatch.crypto.errors import ComputewatchError, SignatureError
from computewatch.crypto.signing import SigningKey, VerifyKey
from computewatch.registry.errors import CustodyError

__all__ = [
    "GENESIS",
    "PRED_REPORT",
    "PRED_REPORT_V1",
    "PRED_TRANSFER",
    "PRED_TRANSFER_V1",
    "REPORT_KINDS",
    "CustodyStatement",
    "countersign",
    "custody_record",
    "encode_statement",
    "item_subject",
    "parse_statement",
    "record_digest",
    "report_statement",
    "require_signature",
    "sign_statement",
    "transfer_statement",
]

PRED_TRANSFER = predicate_type("custody-transfer", 2)
PRED_REPORT = predicate_type("custody-report", 2)
PRED_TRANSFER_V1 = predicate_type("custody-transfer", 1)  # legacy: read, never written
PRED_REPORT_V1 = predicate_type("custody-report", 1)
# predicate type -> (canonical JSON version of the payload, is a transfer)
_PREDICATES = {
    PRED_TRANSFER_V1: (1, True),
    PRED_REPORT_V1: (1, False),
    PRED_TRANSFER: (2, True),
    PRED_REPORT: (2, False),
}
REPORT_KINDS = ("lost", "damaged", "destroyed")
GENESIS = "00" * 32
_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def item_subject(kind: str, label: str, device_keyid: str | None = None) -> tuple[str, dict[str, str]]:
    """The statement's subject: `<kind>/<label>` with, for a chip, the keyid of its certified
    device key (a statement then names that very chip, not only its serial); for a wafer or die,
    the SHA-256 of the label."""
    if kind == "chip":
        if device_keyid is None:
            raise CustodyError("a chip's custody subject needs its device key")
        return f"chip/{label}", {"sha256": device_keyid}
    return f"{kind}/{label}", {"sha256": hashlib.sha256(label.encode("utf-8")).hexdigest()}


def _party(name: str, key: VerifyKey) -> dict[str, str]:
    return {"name": name, "keyid": key.keyid}


def transfer_statement(
    *,
    register: str,
    subject: tuple[str, dict[str, str]],
    seq: int,
    giver: tuple[str, VerifyKey],
    receiver: tuple[str, VerifyKey],
    facility: str | None,
    time: str,
    predicate_type: str = PRED_TRANSFER,
) -> dict[str, Any]:
    """The in-toto statement of a transfer that will take custody sequence number `seq`
    (`predicate_type` PRED_TRANSFER_V1 only to rebuild a legacy statement)."""
    predicate = {
        "register": register,
        "seq": seq,
        "from": _party(*giver),
        "to": _party(*receiver),
        "facility": facility,
        "time": time,
    }
    if _PREDICATES.get(predicate_type, (0, False))[1] is not True:
        raise CustodyError(f"a transfer's predicate type is {PRED_TRANSFER} (or the legacy {PRED_TRANSFER_V1})")
    return statement([subject], predicate_type, predicate)


def report_statement(
    *,
    register: str,
    subject: tuple[str, dict[str, str]],
    seq: int,
    holder: tuple[str, VerifyKey],
    report: str,
    reason: str,
    time: str,
    predicate_type: str = PRED_REPORT,
) -> dict[str, Any]:
    """The in-toto statement of a holder's loss, damage or destruction report
    (`predicate_type` PRED_REPORT_V1 only to rebuild a legacy statement)."""
    if report not in REPORT_KINDS:
        raise CustodyError(f"report must be one of {', '.join(REPORT_KINDS)}, got {report!r}")
    predicate = {
        "register": register,
        "seq": seq,
        "holder": _party(*holder),
        "report": report,
        "reason": reason,
        "time": time,
    }
    if _PREDICATES.get(predicate_type, (0, True))[1] is not False:
        raise CustodyError(f"a report's predicate type is {PRED_REPORT} (or the legacy {PRED_REPORT_V1})")
    return statement([subject], predicate_type, predicate)


def encode_statement(stmt: dict[str, Any]) -> bytes:
    """The payload bytes of a custody statement: the canonical JSON its predicate type names."""
    kind = _PREDICATES.get(str(stmt.get("predicateType")))
    if kind is None:
        raise CustodyError(f"custody statement: predicate type must be one of {sorted(_PREDICATES)}")
    return canonical_json_at(kind[0], stmt)


def sign_statement(stmt: dict[str, Any], key: SigningKey) -> Envelope:
    return sign_envelope(PAYLOAD_TYPE_INTOTO, encode_statement(stmt), key)


def countersign(env: Envelope, key: SigningKey) -> Envelope:
    """Add `key`'s signature over the same PAE (the receiver accepting a transfer)."""
    sig = key.sign(pae(env.payload_type, env.payload))
    return Envelope(env.payload_type, env.payload, [*env.signatures, (key.public_key.keyid, sig)])


@dataclass(frozen=True)
class CustodyStatement:
    """A parsed custody statement (signatures not yet checked)."""

    kind: str  # "transfer" or "report"
    subject: str  # e.g. "chip/CW-0001"
    subject_digest: dict[str, str]
    register: str
    seq: int
    predicate: dict[str, Any]
    envelope: Envelope

    @property
    def item_kind(self) -> str:
        return self.subject.split("/", 1)[0]

    @property
    def label(self) -> str:
        return self.subject.split("/", 1)[1]


def _str(p: dict[str, Any], name: str) -> str:
    value = p.get(name)
    if not isinstance(value, str):
        raise CustodyError(f"custody statement: {name!r} must be a string")
    return value


def _party_field(p: dict[str, Any], name: str) -> dict[str, str]:
    party = p.get(name)
    if not isinstance(party, dict) or set(party) != {"name", "keyid"} or not all(isinstance(v, str) for v in party.values()):
        raise CustodyError(f"custody statement: {name!r} must be {{'name', 'keyid'}}")
    return party


def parse_statement(env: Envelope | bytes) -> CustodyStatement:
    """Decode and shape-check a custody envelope; raises CustodyError naming what is wrong."""
    try:
        if not isinstance(env, Envelope):
            env = Envelope.from_json(env)
        if env.payload_type != PAYLOAD_TYPE_INTOTO:
            raise CustodyError(f"custody statement: payload type {env.payload_type!r} is not in-toto")
        # The predicate type names the payload's one canonical form (v1 legacy, v2 RFC 8785).
        doc, _version = parse_intoto_statement(env.payload, {t: v for t, (v, _) in _PREDICATES.items()})
    except ComputewatchError as exc:
        raise CustodyError(f"custody statement: {exc}") from None
    subjects, p = doc.get("subject"), doc.get("predicate")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(p, dict):
        raise CustodyError("custody statement: needs exactly one subject and a predicate object")
    subject = subjects[0]
    if not isinstance(subject, dict) or not isinstance(subject.get("name"), str) or "/" not in subject["name"]:
        raise CustodyError("custody statement: subject must be named '<kind>/<label>'")
    seq = p.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise CustodyError("custody statement: 'seq' must be an integer >= 1")
    transfer = _PREDICATES[doc["predicateType"]][1]
    if transfer:
        _party_field(p, "from"), _party_field(p, "to")
        if p.get("facility") is not None:
            _str(p, "facility")
        expected = {"register", "seq", "from", "to", "facility", "time"}
    else:
        _party_field(p, "holder")
        if p.get("report") not in REPORT_KINDS:
            raise CustodyError(f"custody statement: 'report' must be one of {', '.join(REPORT_KINDS)}")
        _str(p, "reason")
        expected = {"register", "seq", "holder", "report", "reason", "time"}
    if set(p) != expected:
        raise CustodyError(f"custody statement: predicate fields must be {sorted(expected)}, got {sorted(p)}")
    if not _TIME_RE.fullmatch(_str(p, "time")):
        raise CustodyError("custody statement: 'time' must be ISO-8601 UTC like 2026-05-20T12:00:00Z")
    return CustodyStatement(
        kind="transfer" if transfer else "report",
        subject=subject["name"],
        subject_digest=dict(subject.get("digest") or {}),
        register=_str(p, "register"),
        seq=seq,
        predicate=p,
        envelope=env,
    )


def require_signature(env: Envelope, key: VerifyKey, who: str) -> None:
    """Raise CustodyError unless `env` carries a valid signature by `key` (the party `who`)."""
    message = pae(env.payload_type, env.payload)
    for _keyid, sig in env.signatures:
        try:
            key.verify(sig, message)
        except SignatureError:
            continue
        return
    raise CustodyError(f"no valid signature by {who} (key {key.keyid[:16]}...) on the custody statement")


def custody_record(
    *,
    register: str,
    label: str,
    seq: int,
    kind: str,
    from_name: str | None,
    to_name: str | None,
    facility: str | None,
    statement: bytes | None,
    note: str,
    recorded_at: str,
    prev: str,
) -> dict[str, Any]:
    """Version 1 of a custody record, the object whose canonical JSON `record_digest` hashes."""
    return {
        "v": 1,
        "register": register,
        "item": label,
        "seq": seq,
        "kind": kind,
        "from": from_name,
        "to": to_name,
        "facility": facility,
        "statement_sha256": None if statement is None else hashlib.sha256(statement).hexdigest(),
        "note": note,
        "recorded_at": recorded_at,
        "prev": prev,
    }


def record_digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(record)).hexdigest()
