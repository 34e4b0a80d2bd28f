"""Step challenges over the service (issue 19): the challenges the Verifier issued and the
response folders Provers uploaded (both append-only).

Revision ID: s0003
Revises: s0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from computewatch.service.migrations.versions.s0001_service import ID, TIME, _append_only

revision = "s0003"
down_revision = "s0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_step_challenges",
        sa.Column("id", ID, primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("challenge", sa.LargeBinary, nullable=False),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.Column("issued_at", TIME, nullable=False),
    )
    _append_only("service_step_challenges")
    op.create_table(
        "service_step_responses",
        sa.Column("id", ID, primary_key=True),
        sa.Column("challenge_id", ID, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("received_ns", sa.String(24), nullable=False),
        sa.UniqueConstraint("challenge_id", name="uq_service_step_responses_challenge"),
    )
    _append_only("service_step_responses")


def downgrade() -> None:
    raise RuntimeError("the service's tables are never downgraded; restore a backup instead")
