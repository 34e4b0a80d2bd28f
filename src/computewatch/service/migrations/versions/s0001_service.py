"""The service's tables: nonces, chip log copies (append-only), sessions, signed requests,
hashed transcripts, explanation answers, verify jobs.

Revision ID: s0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.String(32)
APPEND_ONLY = ("service_log_entries", "service_requests")


def _append_only(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # cw_append_only() is the register's trigger function (its revision 0001).
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION cw_append_only()")
        op.execute(f"CREATE TRIGGER {table}_append_only_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION cw_append_only()")
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def upgrade() -> None:
    op.create_table(
        "service_nonces",
        sa.Column("id", ID, primary_key=True),
        sa.Column("party", sa.String(200), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("seen_at", TIME, nullable=False),
        sa.UniqueConstraint("party", "nonce", name="uq_service_nonces_party_nonce"),
    )
    op.create_table(
        "service_log_entries",
        sa.Column("serial", sa.String(200), nullable=False),
        sa.Column("counter", sa.Integer, nullable=False),
        sa.Column("line", sa.LargeBinary, nullable=False),
        sa.Column("entry_sha256", sa.String(64), nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("serial", "counter", name="pk_service_log_entries"),
    )
    op.create_table(
        "service_sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("party", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_table(
        "service_requests",
        sa.Column("id", ID, primary_key=True),
        sa.Column("party", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("statement", sa.LargeBinary, nullable=False),
        sa.Column("received_at", TIME, nullable=False),
    )
    op.create_table(
        "service_transcripts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("precommitment_digest", sa.String(64), nullable=False),
        sa.Column("document", sa.LargeBinary, nullable=False),
        sa.Column("submitted_at", TIME, nullable=False),
        sa.UniqueConstraint("owner", "run_id", "precommitment_digest", name="uq_service_transcripts_run"),
    )
    op.create_table(
        "service_answers",
        sa.Column("id", ID, primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("serial", sa.String(200), nullable=False),
        sa.Column("counter", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("answered_at", TIME, nullable=False),
        sa.UniqueConstraint("owner", "serial", "counter", name="uq_service_answers_snapshot"),
    )
    op.create_table(
        "service_jobs",
        sa.Column("id", ID, primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("fraction", sa.Float, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
    )
    for table in APPEND_ONLY:
        _append_only(table)


def downgrade() -> None:
    raise RuntimeError("the service's tables are never downgraded; restore a backup instead")
