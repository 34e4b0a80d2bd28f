"""Applied or not: a signed write's nonce claim, its effect, the request itself and the answer
given are committed in one database transaction (the register's own operations join it, each in
a savepoint). A crash (kill -9) leaves all of them or none: a resend of the same envelope then
either gets the stored answer back (`X-CW-Resent: 1`) or is applied, once. A refusal decided
after the checks (the register says no, 404, 409) is recorded too, so a resend gets the same
refusal; another envelope under a used nonce is a replay (403).

Answers holding a secret that must not sit in the database (a session token) are stored as a
refusal for resends: the signer signs a new request.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from computewatch.registry import db as reg_db
from computewatch.registry.unit import joined
from computewatch.registry.unit import pause_point as _pause_point
from computewatch.service import schema as ss
from computewatch.service.auth import SignedWrite
from computewatch.service.errors import ServiceError
from computewatch.service.jobs import scrub_paths
from computewatch.service.state import Service
from computewatch.service.statements import format_time

__all__ = ["Answer", "recorded"]

log = logging.getLogger("computewatch.service")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    resent: bool = False


def _stored(conn: Connection, write: SignedWrite) -> Any:
    t = ss.responses
    return conn.execute(select(t.c.statement_sha256, t.c.status, t.c.answer)
                        .where(t.c.party == write.principal.name, t.c.nonce == write.nonce)).first()


def recorded(svc: Service, write: SignedWrite, effect: Callable[[Connection], Any], *, secret: bool = False) -> Answer:
    """Claim `write`'s nonce, run `effect(conn)` and record the answer, in one transaction.
    Raises the effect's ServiceError after recording it; returns the answer otherwise."""
    digest = hashlib.sha256(write.envelope).hexdigest()
    error: ServiceError | None = None
    with reg_db.write(svc.engine) as conn:
        prior = _stored(conn, write)
        if prior is not None:
            if prior.statement_sha256 != digest:
                raise ServiceError(403, f"replayed request: nonce {write.nonce[:16]}... of {write.principal.name!r} was already used")
            log.info("resent %s of %s (nonce %s...): stored answer %s", write.action, write.principal.name, write.nonce[:16], prior.status)
            return Answer(int(prior.status), json.loads(bytes(prior.answer)), resent=True)
        svc.auth.claim_nonce(conn, write.principal.name, write.nonce)
        try:
            with conn.begin_nested(), joined(conn):
                body = effect(conn)
            answer = Answer(200, body)
        except IntegrityError as exc:
            error = ServiceError(409, f"already recorded: {str(exc.orig).splitlines()[0] if exc.orig else exc}")
        except ServiceError as exc:
            error = exc
        if error is not None:
            answer = Answer(error.status, {"error": error.reason, "status": error.status})
        # Answers name files relative to the data folder, never the server's absolute paths.
        roots = (svc.config.data_dir.resolve(), svc.config.data_dir)
        answer = Answer(answer.status, json.loads(scrub_paths(json.dumps(answer.body), *roots)))
        if error is not None:
            error = ServiceError(error.status, scrub_paths(error.reason, *roots))
        kept = answer
        if secret and error is None:
            kept = Answer(403, {"error": f"replayed request: this {write.action} request was answered once; sign a new one", "status": 403})
        now = format_time()
        conn.execute(insert(ss.requests).values(party=write.principal.name, action=write.action, nonce=write.nonce,
                                                statement=write.envelope, received_at=now))
        conn.execute(insert(ss.responses).values(party=write.principal.name, nonce=write.nonce, action=write.action,
                                                 statement_sha256=digest, status=kept.status,
                                                 answer=json.dumps(kept.body, sort_keys=True).encode(), answered_at=now))
        _pause_point("service-write")  # test hook: a crash here loses the whole transaction
    _pause_point("service-answered")  # test hook: a crash here loses only the answer on the wire
    if error is not None:
        log.info("%s of %s refused: %s %s", write.action, write.principal.name, error.status, error.reason)
        raise error
    return answer
