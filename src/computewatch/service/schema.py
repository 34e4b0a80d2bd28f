"""The service's own tables (prefix `service_`), beside the register's in the same database.

They are created by the service's own Alembic chain (`computewatch.service.migrations`, version
table `service_alembic_version`), never by `create_all`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["answers", "jobs", "log_entries", "metadata", "nonces", "requests", "responses", "sessions", "step_challenges", "step_responses", "transcripts"]

metadata = MetaData()
_ID = BigInteger().with_variant(Integer(), "sqlite")
_TIME = String(32)

nonces = Table(
    "service_nonces",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("party", String(200), nullable=False),
    Column("nonce", String(128), nullable=False),
    Column("seen_at", _TIME, nullable=False),
    UniqueConstraint("party", "nonce", name="uq_service_nonces_party_nonce"),
)

log_entries = Table(
    "service_log_entries",
    metadata,
    Column("serial", String(200), primary_key=True),
    Column("counter", Integer, primary_key=True),
    Column("line", LargeBinary, nullable=False),
    Column("entry_sha256", String(64), nullable=False),
    Column("received_at", _TIME, nullable=False),
)

sessions = Table(
    "service_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("party", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", _TIME, nullable=False),
    Column("expires_at", _TIME, nullable=False),
)

requests = Table(
    "service_requests",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("party", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("nonce", String(128), nullable=False),
    Column("statement", LargeBinary, nullable=False),
    Column("received_at", _TIME, nullable=False),
)

# The answer given to each accepted signed write (revision s0002): a resend of the same envelope
# gets it back; the write's effect, its request row and this row commit together.
responses = Table(
    "service_responses",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("party", String(200), nullable=False),
    Column("nonce", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("statement_sha256", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("answer", LargeBinary, nullable=False),
    Column("answered_at", _TIME, nullable=False),
    UniqueConstraint("party", "nonce", name="uq_service_responses_party_nonce"),
)

transcripts = Table(
    "service_transcripts",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("precommitment_digest", String(64), nullable=False),
    Column("document", LargeBinary, nullable=False),  # the signed hashed transcript, as submitted
    Column("submitted_at", _TIME, nullable=False),
    UniqueConstraint("owner", "run_id", "precommitment_digest", name="uq_service_transcripts_run"),
)

answers = Table(
    "service_answers",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("serial", String(200), nullable=False),
    Column("counter", Integer, nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Column("answered_at", _TIME, nullable=False),
    UniqueConstraint("owner", "serial", "counter", name="uq_service_answers_snapshot"),
)

jobs = Table(
    "service_jobs",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # queued, running, done, failed
    Column("request", Text, nullable=False),  # canonical JSON of the job's body
    Column("stage", String(64), nullable=False),
    Column("done", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("fraction", Float, nullable=False),
    Column("verdict", String(16), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", _TIME, nullable=False),
    Column("started_at", _TIME, nullable=True),
    Column("finished_at", _TIME, nullable=True),
)

# Step challenges (revision s0003, issue 19): the Verifier's challenge documents, addressed to the
# owner who holds the run, and the response folder each one got (one, received once).
step_challenges = Table(
    "service_step_challenges",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("challenge", LargeBinary, nullable=False),  # canonical JSON, as issued
    Column("issued_by", String(200), nullable=False),
    Column("issued_at", _TIME, nullable=False),
)

step_responses = Table(
    "service_step_responses",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("challenge_id", _ID, nullable=False),
    Column("owner", String(200), nullable=False),
    Column("path", String(1000), nullable=False),  # under the data folder: responses/<owner>/challenge-<id>
    Column("sha256", String(64), nullable=False),  # of the uploaded archive
    Column("received_ns", String(24), nullable=False),  # the service's clock: the deadline is judged by it
    UniqueConstraint("challenge_id", name="uq_service_step_responses_challenge"),
)
