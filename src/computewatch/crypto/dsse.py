"""DSSE v1 envelopes (Ed25519) carrying in-toto Statement v1 payloads in canonical JSON."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from computewatch.crypto.canonical import canonical_json, parse_canonical_json_tagged
from computewatch.crypto.errors import FormatError, SignatureError
from computewatch.crypto.signing import SigningKey, VerifyKey

__all__ = [
    "PAYLOAD_TYPE_INTOTO",
    "PREDICATE_PREFIX",
    "STATEMENT_TYPE",
    "Envelope",
    "pae",
    "parse_statement",
    "predicate_type",
    "sign_envelope",
    "statement",
    "verify_envelope",
]

PAYLOAD_TYPE_INTOTO = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_PREFIX = "urn:computewatch:"
_PREDICATE_RE = re.compile(r"^urn:computewatch:[a-z0-9][a-z0-9-]*:v[0-9]+$")


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), bytes(body))


def _b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"DSSE envelope: {what} must be a base64 string")
    try:
        # validate=True rejects stray characters instead of silently skipping them.
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FormatError(f"DSSE envelope: {what} is not valid base64 ({exc})") from None


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: list[tuple[str, bytes]] = field(default_factory=list)

    def to_json(self) -> bytes:
        """The envelope as canonical JSON bytes (standard base64 with padding)."""
        doc = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode("ascii")} for k, s in self.signatures],
        }
        return canonical_json(doc)

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints
            raise FormatError(f"DSSE envelope: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise FormatError("DSSE envelope: top level must be a JSON object")
        for name in ("payloadType", "payload", "signatures"):
            if name not in doc:
                raise FormatError(f"DSSE envelope: missing field {name!r}")
        if not isinstance(doc["payloadType"], str):
            raise FormatError("DSSE envelope: payloadType must be a string")
        if not isinstance(doc["signatures"], list):
            raise FormatError("DSSE envelope: signatures must be a list")
        sigs: list[tuple[str, bytes]] = []
        for i, s in enumerate(doc["signatures"]):
            if not isinstance(s, dict) or "sig" not in s:
                raise FormatError(f"DSSE envelope: signature {i} must be an object with a 'sig' field")
            keyid = s.get("keyid", "")
            if not isinstance(keyid, str):
                raise FormatError(f"DSSE envelope: signature {i} keyid must be a string")
            sigs.append((keyid, _b64decode(s["sig"], f"signature {i} sig")))
        return cls(doc["payloadType"], _b64decode(doc["payload"], "payload"), sigs)


def sign_envelope(payload_type: str, payload: bytes, key: SigningKey | Sequence[SigningKey]) -> Envelope:
    """Sign `payload` (for in-toto: canonical JSON bytes) with one or more keys."""
    keys = [key] if isinstance(key, SigningKey) else list(key)
    if not keys:
        raise SignatureError("sign_envelope needs at least one signing key")
    message = pae(payload_type, payload)
    return Envelope(payload_type, bytes(payload), [(k.public_key.keyid, k.sign(message)) for k in keys])


def verify_envelope(
    env: Envelope, keys: Sequence[VerifyKey], *, payload_type: str | None = PAYLOAD_TYPE_INTOTO
) -> bytes:
    """Return the payload if at least one signature verifies under a trusted key.

    `payload_type` is what the caller expects (None accepts any); a mismatch is rejected before
    any signature is checked, since the type is part of what was signed.
    """
    if payload_type is not None and env.payload_type != payload_type:
        raise SignatureError(f"DSSE envelope: payload type {env.payload_type!r}, expected {payload_type!r}")
    if not env.signatures:
        raise SignatureError("DSSE envelope: carries no signatures")
    trusted = {k.keyid: k for k in keys}
    if not trusted:
        raise SignatureError("DSSE envelope: no trusted keys given to verify against")
    message = pae(env.payload_type, env.payload)
    for keyid, sig in env.signatures:
        # The keyid is only a hint; a signature with an unknown or empty keyid is tried on every key.
        candidates = [trusted[keyid]] if keyid in trusted else list(trusted.values())
        for k in candidates:
            try:
                k.verify(sig, message)
            except SignatureError:
                continue
            return env.payload
    known = sorted(k for k, _ in env.signatures)
    raise SignatureError(f"DSSE envelope: no valid signature from a trusted key (signature keyids: {known})")


def predicate_type(kind: str, version: int = 1) -> str:
    """The URN predicate type for a statement kind, e.g. `urn:computewatch:snapshot:v1`."""
    urn = f"{PREDICATE_PREFIX}{kind}:v{version}"
    if not _PREDICATE_RE.match(urn):
        raise FormatError(f"bad predicate kind {kind!r}: lowercase letters, digits and '-' only")
    return urn


def statement(subjects: list[tuple[str, dict[str, str]]], predicate_type: str, predicate: dict[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 as a plain dict (encode with canonical_json to sign it)."""
    if not subjects:
        raise FormatError("in-toto statement needs at least one subject")
    subject_list = []
    for name, digest in subjects:
        if not isinstance(name, str) or not isinstance(digest, dict) or not digest:
            raise FormatError(f"in-toto subject {name!r}: needs a name and a non-empty digest dict")
        for alg, value in digest.items():
            if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]+", value):
                raise FormatError(f"in-toto subject {name!r}: digest {alg!r} must be lowercase hex")
        subject_list.append({"name": name, "digest": dict(digest)})
    if not isinstance(predicate_type, str) or not predicate_type:
        raise FormatError("in-toto statement needs a predicate type")
    if not isinstance(predicate, dict):
        raise FormatError("in-toto predicate must be a JSON object")
    return {"_type": STATEMENT_TYPE, "subject": subject_list, "predicateType": predicate_type, "predicate": predicate}


def parse_statement(payload: bytes, canonical: Mapping[str, int]) -> tuple[dict[str, Any], int]:
    """Parse an in-toto Statement whose predicate type is a key of `canonical`, which maps each
    accepted predicate type to the canonical JSON version its payload is in (1, or 2 for
    RFC 8785). Returns the statement and that version; the payload must be exactly that
    version's encoding (FormatError otherwise, or for another predicate type)."""

    def version_of(obj: Any) -> int:
        got = obj.get("predicateType") if isinstance(obj, dict) else None
        if not isinstance(got, str) or got not in canonical:
            raise FormatError(f"statement has predicate type {got!r}; expected one of {sorted(canonical)}")
        return canonical[got]

    stmt, version = parse_canonical_json_tagged(payload, version_of)
    return stmt, version
