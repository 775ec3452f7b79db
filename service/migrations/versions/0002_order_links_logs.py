"""A task's place in its batch (resend order), endpoints' link tokens, the log records
a task's body emitted.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as t:
        t.add_column(sa.Column("batch_pos", sa.Integer, nullable=False, server_default="0"))
        t.add_column(sa.Column("logs", sa.JSON))
    with op.batch_alter_table("endpoints") as t:
        t.add_column(sa.Column("link_token_hash", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as t:
        t.drop_column("link_token_hash")
    with op.batch_alter_table("tasks") as t:
        t.drop_column("logs")
        t.drop_column("batch_pos")
