"""The answer given to each accepted signed write, so a resend after a crash gets it back
(append-only, like service_requests).

Revision ID: s0002
Revises: s0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from computewatch.service.migrations.versions.s0001_service import ID, TIME, _append_only

revision = "s0002"
down_revision = "s0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_responses",
        sa.Column("id", ID, primary_key=True),
        sa.Column("party", sa.String(200), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("statement_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("answer", sa.LargeBinary, nullable=False),
        sa.Column("answered_at", TIME, nullable=False),
        sa.UniqueConstraint("party", "nonce", name="uq_service_responses_party_nonce"),
    )
    _append_only("service_responses")


def downgrade() -> None:
    raise RuntimeError("the service's tables are never downgraded; restore a backup instead")
