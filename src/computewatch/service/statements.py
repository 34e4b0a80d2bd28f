"""The signed statements a client sends: writes as DSSE envelopes, reads as signed headers.

Write (`signed_request`): a DSSE v1 envelope (Ed25519, PAE) around an in-toto Statement v1

    subject:   [{"name": "service-request/<action>", "digest": {"sha256": SHA-256(canonical JSON of body)}}]
    predicateType: "urn:computewatch:service-request:v2"
    predicate: {"register": register id, "action": str, "party": name, "nonce": hex (16..64 bytes),
                "time": ISO-8601 UTC "YYYY-MM-DDTHH:MM:SSZ", "body": object}

Version 2 (written now) is encoded in canonical JSON version 2 (RFC 8785), the payload and the
body whose digest the subject names alike; version 1 (the legacy encoding) is still accepted,
and the stored envelopes of either version stay verifiable.

Read (`read_headers`): an HTTP Message Signature (RFC 9421, `computewatch.service.httpsig`)
over "@method", "@path" and "@query" of the raw request target; an upload (a raw body that is
no envelope) also covers its Content-Digest (RFC 9530). The version 1 read signature (X-CW-*
headers over a percent-decoded path) is gone: nothing stored depended on it.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, UTC
from typing import Any

from computewatch.crypto.canonical import canonical_json_at, canonical_json_v2
from computewatch.crypto.dsse import (
    PAYLOAD_TYPE_INTOTO,
    Envelope,
    sign_envelope,
    statement,
)
from computewatch.crypto.signing import SigningKey
from computewatch.service.httpsig import sign_request

__all__ = [
    "NONCE_RE",
    "PRED_REQUEST",
    "PRED_REQUEST_V1",
    "REQUEST_VERSIONS",
    "STATEMENT_FIELDS",
    "TIME_RE",
    "body_digest",
    "format_time",
    "new_nonce",
    "read_headers",
    "signed_request",
]

PRED_REQUEST = "urn:computewatch:service-request:v2"
PRED_REQUEST_V1 = "urn:computewatch:service-request:v1"
# predicate type -> canonical JSON version of its payload and body digest
REQUEST_VERSIONS = {PRED_REQUEST_V1: 1, PRED_REQUEST: 2}
STATEMENT_FIELDS = frozenset({"register", "action", "party", "nonce", "time", "body"})
NONCE_RE = re.compile(r"(?:[0-9a-f]{2}){16,64}")
TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def format_time(t: datetime | None = None) -> str:
    t = t or datetime.now(UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_nonce() -> str:
    return os.urandom(16).hex()


def body_digest(body: Any, canonical: int = 2) -> str:
    """SHA-256 (hex) of the body's canonical JSON, in the request version's encoding."""
    return hashlib.sha256(canonical_json_at(canonical, body)).hexdigest()


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
    return sign_envelope(PAYLOAD_TYPE_INTOTO, canonical_json_v2(stmt), key)


def read_headers(
    method: str,
    target: str,
    *,
    party: str,
    key: SigningKey,
    register: str,
    nonce: str | None = None,
    created: int | None = None,
    expires: int | None = None,
    body: bytes | None = None,
) -> dict[str, str]:
    """RFC 9421 headers (Signature-Input, Signature) that authenticate one request for `method`
    on the raw `target` (path and query exactly as sent); with `body` (an upload) also the
    Content-Digest field (RFC 9530, sha-256), which the signature covers."""
    return sign_request(method, target, party=party, key=key, register=register, nonce=nonce or new_nonce(),
                        body=body, created=created, expires=expires)
