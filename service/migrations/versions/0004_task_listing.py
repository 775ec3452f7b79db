"""A user's tasks by the time they were received: the index a task listing reads
(service/store/listing.py).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_owner_received", "tasks", ["owner_id", "t_received", "task_id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_owner_received", table_name="tasks")
