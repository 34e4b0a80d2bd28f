"""Who is asking: signed writes, signed reads and dashboard sessions, checked against the keys
the register holds (and the Verifier keys the service was started with).

Roles: `verifier` (sees and may do everything a Verifier does), `owner`, `inspector`,
`chipmaker`, `fab` (the register's party roles). A write is a DSSE envelope signed by the
party's registered key (docs/service.md); its nonce is claimed in `service_nonces` in the same
transaction as the write's effect, so a replay is refused (403) and stores nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from computewatch.crypto.canonical import parse_canonical_json
from computewatch.crypto.dsse import PAYLOAD_TYPE_INTOTO, Envelope, pae
from computewatch.crypto.errors import ComputewatchError, SignatureError
from computewatch.crypto.signing import VerifyKey
from computewatch.registry import db as reg_db
from computewatch.registry import schema as rs
from computewatch.service import schema as ss
from computewatch.service.config import ServiceConfig
from computewatch.service.errors import ServiceError
from computewatch.service.models import PARTY_NAME
from computewatch.service.statements import (
    HEADER_CONTENT_SHA256,
    HEADER_NONCE,
    HEADER_PARTY,
    HEADER_SIGNATURE,
    HEADER_TIME,
    NONCE_RE,
    PRED_REQUEST,
    STATEMENT_FIELDS,
    TIME_RE,
    body_digest,
    format_time,
    read_signing_input,
)

__all__ = ["MAX_SIGNATURES", "SESSION_COOKIE", "Authenticator", "Principal", "SignedWrite", "check_signature_count"]

SESSION_COOKIE = "cw_session"
# Signatures one envelope may carry: a request has one signer, a custody transfer two; each
# costs a verification, so an envelope with thousands of bogus ones is refused unread.
MAX_SIGNATURES = 4
_SAFE_NAME = re.compile(PARTY_NAME)


_PRUNE_EVERY = 1000  # claims between two prunes of old nonces


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def is_verifier(self) -> bool:
        return self.role == "verifier"


@dataclass(frozen=True)
class SignedWrite:
    principal: Principal
    action: str
    body: dict[str, Any]
    nonce: str
    envelope: bytes


log = logging.getLogger("computewatch.service")


def check_signature_count(env: Envelope, what: str = "envelope") -> None:
    if not env.signatures:
        raise ServiceError(422, f"{what} carries no signature")
    if len(env.signatures) > MAX_SIGNATURES:
        raise ServiceError(422, f"{what} carries {len(env.signatures)} signatures; at most {MAX_SIGNATURES} are accepted")


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class Authenticator:
    def __init__(self, engine: Engine, register_id: str, config: ServiceConfig) -> None:
        self._engine = engine
        self.register_id = register_id
        self._config = config
        self._claims = 0

    # ------------------------------------------------------------------ keys
    def party_key(self, name: str) -> tuple[str, VerifyKey]:
        """(role, key) of `name`: a Verifier key, or the register's party. 401 if unknown, and
        401 if both hold the name (a key file named like a party never takes over its identity)."""
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
            raise ServiceError(401, f"party name {str(name)[:80]!r}: a letter or digit, then letters, digits, ' ', '.', '_', '@', '-'")
        with reg_db.read(self._engine) as conn:
            row = conn.execute(select(rs.parties.c.role, rs.parties.c.public_key).where(rs.parties.c.name == name)).first()
        if name in self._config.verifiers:
            if row is not None:
                log.error("Verifier key %r collides with the register's party of that name: both refused", name)
                raise ServiceError(401, f"{name!r} names both a Verifier key and a register party: refused (rename the key file)")
            return "verifier", self._config.verifiers[name]
        if row is None:
            raise ServiceError(401, f"unknown party {name!r}: not registered")
        return str(row.role), VerifyKey.from_raw(bytes(row.public_key))

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _check_time(self, text: Any) -> None:
        if not isinstance(text, str) or not TIME_RE.fullmatch(text):
            raise ServiceError(401, "statement time must be ISO-8601 UTC like 2026-05-20T12:00:00Z")
        try:
            t = _parse_time(text)
        except ValueError:
            raise ServiceError(401, f"statement time {text!r} is not a valid date") from None
        skew = abs((self._now() - t).total_seconds())
        if skew > self._config.max_skew_s:
            raise ServiceError(401, f"statement time {text} is {int(skew)} s from the server's clock (limit {self._config.max_skew_s} s): stale or replayed")

    # ------------------------------------------------------------------ writes
    def verify_write(self, data: bytes, action: str, roles: tuple[str, ...]) -> SignedWrite:
        """Check a signed write for `action`, allowed to `roles` (the Verifier always is)."""
        try:
            env = Envelope.from_json(data)
        except ComputewatchError as exc:
            raise ServiceError(422, f"body is not a DSSE envelope: {exc}") from None
        check_signature_count(env, "request envelope")
        if env.payload_type != PAYLOAD_TYPE_INTOTO:
            raise ServiceError(422, f"payload type {env.payload_type!r} is not {PAYLOAD_TYPE_INTOTO}")
        try:
            doc = parse_canonical_json(env.payload)
        except ComputewatchError as exc:
            raise ServiceError(422, f"statement is not canonical JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("predicateType") != PRED_REQUEST:
            raise ServiceError(422, f"statement's predicate type must be {PRED_REQUEST}")
        p = doc.get("predicate")
        if not isinstance(p, dict) or set(p) != STATEMENT_FIELDS:
            raise ServiceError(422, f"request predicate fields must be {sorted(STATEMENT_FIELDS)}")
        if not isinstance(p["party"], str) or not isinstance(p["action"], str) or not isinstance(p["body"], dict):
            raise ServiceError(422, "request predicate: party and action must be strings, body an object")
        role, key = self.party_key(p["party"])
        message = pae(env.payload_type, env.payload)
        for _keyid, sig in env.signatures:
            try:
                key.verify(sig, message)
                break
            except SignatureError:
                continue
        else:
            raise ServiceError(401, f"no valid signature by {p['party']!r} (registered key {key.keyid[:16]}...) on the request")
        if p["register"] != self.register_id:
            raise ServiceError(401, f"request is for register {p['register']!r}, not this one ({self.register_id})")
        if p["action"] != action:
            raise ServiceError(401, f"request was signed for action {p['action']!r}, not {action!r}")
        subjects = doc.get("subject")
        want = [{"name": f"service-request/{action}", "digest": {"sha256": body_digest(p["body"])}}]
        if subjects != want:
            raise ServiceError(401, "request subject does not name this action and the digest of its body")
        if not isinstance(p["nonce"], str) or not NONCE_RE.fullmatch(p["nonce"]):
            raise ServiceError(401, "request nonce must be 16 to 64 random bytes in lowercase hex")
        self._check_time(p["time"])
        if role != "verifier" and role not in roles:
            allowed = ", ".join(("verifier", *roles))
            raise ServiceError(403, f"party {p['party']!r} has role {role!r}; {action!r} needs one of: {allowed}")
        return SignedWrite(Principal(p["party"], role), action, p["body"], p["nonce"], bytes(data))

    def claim_nonce(self, conn: Connection, party: str, nonce: str) -> None:
        t = ss.nonces
        if conn.execute(select(t.c.id).where(t.c.party == party, t.c.nonce == nonce)).first() is not None:
            raise ServiceError(403, f"replayed request: nonce {nonce[:16]}... of {party!r} was already used")
        now = self._now()
        try:
            with conn.begin_nested():
                conn.execute(insert(t).values(party=party, nonce=nonce, seen_at=format_time(now)))
        except IntegrityError:
            raise ServiceError(403, f"replayed request: nonce {nonce[:16]}... of {party!r} was already used") from None
        self._claims += 1
        if self._claims % _PRUNE_EVERY == 0:
            self.prune_nonces(conn, now)

    def prune_nonces(self, conn: Connection, now: datetime) -> int:
        """Forget nonces seen more than twice the allowed clock skew ago: a request that old is
        refused by its time alone (its time was within the skew of when its nonce was seen), so
        the table stays bounded without reopening replays. Writes stay in service_requests."""
        cutoff = format_time(now - timedelta(seconds=2 * self._config.max_skew_s))
        return int(conn.execute(delete(ss.nonces).where(ss.nonces.c.seen_at < cutoff)).rowcount or 0)

    # ------------------------------------------------------------------ reads
    def verify_read(self, method: str, path: str, headers: Any, cookies: Any) -> Principal | None:
        """The reader, from signed headers, a bearer token or the session cookie; None if anonymous."""
        party = headers.get(HEADER_PARTY)
        if party is not None:
            return self._signed_read(method, path, headers, party)
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return self.session(auth[7:].strip())
        token = cookies.get(SESSION_COOKIE)
        if token:
            return self.session(token)
        return None

    def verify_upload(self, method: str, path: str, headers: Any) -> tuple[Principal, str]:
        """An upload, checked before a byte of its body is read: signed headers whose signature
        covers the body's SHA-256 as claimed in X-CW-Content-SHA256 (the caller compares the
        body it then reads with that digest). Returns the uploader and the claimed digest."""
        party = headers.get(HEADER_PARTY)
        if party is None:
            raise ServiceError(401, f"an upload is signed: {HEADER_PARTY}, {HEADER_TIME}, {HEADER_NONCE}, {HEADER_SIGNATURE}")
        claimed = headers.get(HEADER_CONTENT_SHA256, "")
        if not re.fullmatch(r"[0-9a-f]{64}", claimed):
            raise ServiceError(401, f"{HEADER_CONTENT_SHA256}: the body's SHA-256, 64 lowercase hex digits")
        return self._signed_read(method, path, headers, party, claimed), claimed

    def _signed_read(self, method: str, path: str, headers: Any, party: str, body_sha256: str | None = None) -> Principal:
        time, nonce, sig_b64 = headers.get(HEADER_TIME), headers.get(HEADER_NONCE), headers.get(HEADER_SIGNATURE)
        if not time or not nonce or not sig_b64:
            raise ServiceError(401, f"a signed read needs the headers {HEADER_TIME}, {HEADER_NONCE} and {HEADER_SIGNATURE}")
        if not NONCE_RE.fullmatch(nonce):
            raise ServiceError(401, "read nonce must be 16 to 64 random bytes in lowercase hex")
        try:
            sig = base64.b64decode(sig_b64.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ServiceError(401, f"{HEADER_SIGNATURE} is not base64") from None
        role, key = self.party_key(party)
        message = read_signing_input(register=self.register_id, party=party, method=method, path=path, time=time, nonce=nonce,
                                     body_sha256=body_sha256)
        try:
            key.verify(sig, message)
        except SignatureError:
            raise ServiceError(401, f"bad signature on the read request of {party!r}") from None
        self._check_time(time)
        with reg_db.write(self._engine) as conn:
            self.claim_nonce(conn, party, nonce)
        return Principal(party, role)

    # ------------------------------------------------------------------ sessions
    def new_session(self, conn: Connection, principal: Principal) -> tuple[str, str]:
        token = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")
        expires = format_time(self._now() + timedelta(seconds=self._config.session_ttl_s))
        conn.execute(
            insert(ss.sessions).values(
                token_sha256=hashlib.sha256(token.encode()).hexdigest(), party=principal.name, role=principal.role,
                created_at=format_time(), expires_at=expires,
            )
        )
        return token, expires

    def revoke(self, token: str) -> bool:
        """Forget a session token (logout): it authenticates nothing afterwards."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with reg_db.write(self._engine) as conn:
            n = conn.execute(delete(ss.sessions).where(ss.sessions.c.token_sha256 == digest)).rowcount
        return bool(n)

    def session(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).hexdigest()
        t = ss.sessions
        with reg_db.read(self._engine) as conn:
            row = conn.execute(select(t.c.party, t.c.role, t.c.expires_at).where(t.c.token_sha256 == digest)).first()
        if row is None:
            raise ServiceError(401, "unknown session token")
        if row.expires_at < format_time():
            with reg_db.write(self._engine) as conn:
                conn.execute(delete(t).where(t.c.token_sha256 == digest))
            raise ServiceError(401, "session expired: sign in again")
        return Principal(str(row.party), str(row.role))
