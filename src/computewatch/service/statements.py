"""The signed statements a client sends: writes as DSSE envelopes, reads as signed headers.

Write (`signed_request`): a DSSE v1 envelope (Ed25519, PAE) around an in-toto Statement v1

    subject:   [{"name": "service-request/<action>", "digest": {"sha256": SHA-256(canonical_json(body))}}]
    predicateType: "urn:computewatch:service-request:v1"
    predicate: {"register": register id, "action": str, "party": name, "nonce": hex (16..64 bytes),
                "time": ISO-8601 UTC "YYYY-MM-DDTHH:MM:SSZ", "body": object}

Read (`read_headers`): the headers X-CW-Party, X-CW-Time, X-CW-Nonce and X-CW-Signature, the
signature (base64 Ed25519) over PAE(READ_PAYLOAD_TYPE, canonical_json({"v": 1, "register",
"party", "method", "path", "time", "nonce"})), where `path` is the request path with its query
string exactly as sent (`/v1/chips?limit=10`). An upload (a raw body that is no envelope) is
signed the same way with one more field, "body_sha256" (lowercase hex SHA-256 of the body), also
sent as the header X-CW-Content-SHA256.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from datetime import UTC, datetime
from typing import Any

from computewatch.crypto.canonical import canonical_json
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    pae,
    sign_envelope,
    statement,
)
from computewatch.crypto.signing import SigningKey

__all__ = [
    "HEADER_CONTENT_SHA256",
    "HEADER_NONCE",
    "HEADER_PARTY",
    "HEADER_SIGNATURE",
    "HEADER_TIME",
    "NONCE_RE",
    "PRED_REQUEST",
    "READ_PAYLOAD_TYPE",
    "STATEMENT_FIELDS",
    "TIME_RE",
    "body_digest",
    "format_time",
    "new_nonce",
    "read_headers",
    "read_signing_input",
    "signed_request",
]

PRED_REQUEST = "urn:computewatch:service-request:v1"
READ_PAYLOAD_TYPE = "application/vnd.computewatch.service-read+json"
HEADER_PARTY = "X-CW-Party"
HEADER_TIME = "X-CW-Time"
HEADER_NONCE = "X-CW-Nonce"
HEADER_SIGNATURE = "X-CW-Signature"
HEADER_CONTENT_SHA256 = "X-CW-Content-SHA256"
STATEMENT_FIELDS = frozenset({"register", "action", "party", "nonce", "time", "body"})
NONCE_RE = re.compile(r"(?:[0-9a-f]{2}){16,64}")
TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def format_time(t: datetime | None = None) -> str:
    t = t or datetime.now(UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_nonce() -> str:
    return os.urandom(16).hex()


def body_digest(body: Any) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def signed_request(
    action: str,
    body: dict[str, Any],
    *,
    party: str,
    key: SigningKey,
    register: str,
    nonce: str | None = None,
    time: str | None = None,
) -> Envelope:
    """The envelope for one write: `action` on `body`, by `party` (signed with its registered key)."""
    predicate = {
        "register": register,
        "action": action,
        "party": party,
        "nonce": nonce or new_nonce(),
        "time": time or format_time(),
        "body": body,
    }
    stmt = statement([(f"service-request/{action}", {"sha256": body_digest(body)})], PRED_REQUEST, predicate)
    return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json(stmt), key)


def read_signing_input(
    *, register: str, party: str, method: str, path: str, time: str, nonce: str, body_sha256: str | None = None
) -> bytes:
    doc = {"v": 1, "register": register, "party": party, "method": method.upper(), "path": path, "time": time, "nonce": nonce}
    if body_sha256 is not None:  # an upload: the signature covers the body's digest too
        doc["body_sha256"] = body_sha256
    return pae(READ_PAYLOAD_TYPE, canonical_json(doc))


def read_headers(
    method: str,
    path: str,
    *,
    party: str,
    key: SigningKey,
    register: str,
    nonce: str | None = None,
    time: str | None = None,
    body: bytes | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request (`path` includes the query string, as sent); with
    `body` (an upload) the signature also covers SHA-256 of the body, sent as X-CW-Content-SHA256."""
    nonce = nonce or new_nonce()
    time = time or format_time()
    digest = None if body is None else hashlib.sha256(body).hexdigest()
    sig = key.sign(read_signing_input(register=register, party=party, method=method, path=path, time=time, nonce=nonce, body_sha256=digest))
    headers = {
        HEADER_PARTY: party,
        HEADER_TIME: time,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: base64.b64encode(sig).decode("ascii"),
    }
    if digest is not None:
        headers[HEADER_CONTENT_SHA256] = digest
    return headers
