"""Replicas: which are alive, where each endpoint is linked and its last status (any
replica answers for it), and the per-user request buckets they share.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("seen_at", sa.Float, nullable=False),
    )
    op.create_table(
        "endpoint_links",
        sa.Column("endpoint_id", sa.String(36), sa.ForeignKey("endpoints.endpoint_id",
                                                              ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("replica", sa.String(200), nullable=False),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("info", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.user_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("endpoint_links")
    op.drop_table("replicas")
