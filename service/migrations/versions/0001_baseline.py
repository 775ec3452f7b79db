"""The schema as it stood before migrations (what `create_all` made, with the columns
and partial indexes added up to then).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _partial(name: str, columns: tuple[str, ...], where: str) -> sa.Index:
    return sa.Index(name, *columns, sqlite_where=sa.text(where),
                    postgresql_where=sa.text(where))


def tables(md: sa.MetaData) -> sa.MetaData:
    """The baseline's tables (also used to complete a pre-migration database)."""
    sa.Table(
        "users", md,
        sa.Column("user_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False))
    sa.Table(
        "tokens", md,
        sa.Column("token_id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float))
    sa.Table(
        "functions", md,
        sa.Column("function_id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("memoize", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("owner_id", "body_hash", name="uq_function_owner_hash"))
    sa.Table(
        "endpoints", md,
        sa.Column("endpoint_id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("public_key", sa.String(40), nullable=False, unique=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float),
        sa.UniqueConstraint("owner_id", "name", name="uq_endpoint_owner_name"))
    sa.Table(
        "tasks", md,
        sa.Column("task_id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("function_id", sa.String(36), nullable=False),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("group_id", sa.String(64)),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("resources", sa.JSON),
        sa.Column("result", sa.LargeBinary),
        sa.Column("error", sa.JSON),
        sa.Column("stdout", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("t_received", sa.Float),
        sa.Column("t_waiting", sa.Float),
        sa.Column("t_dispatched", sa.Float),
        sa.Column("t_running", sa.Float),
        sa.Column("t_completed", sa.Float),
        sa.Column("memo_key", sa.String(64)),
        sa.Column("blobs", sa.Integer, nullable=False, server_default="0"),
        sa.Index("ix_tasks_endpoint_state", "endpoint_id", "state"),
        sa.Index("ix_tasks_owner_state", "owner_id", "state"),
        _partial("ix_tasks_memo_key", ("owner_id", "memo_key"), "memo_key IS NOT NULL"),
        _partial("ix_tasks_owner_done_seq", ("owner_id", "seq"), "seq > 0"),
        _partial("ix_tasks_done_at", ("t_completed",), "t_completed IS NOT NULL"))
    sa.Table(
        "shares", md,
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("object_id", sa.String(36), primary_key=True),
        sa.Column("principal", sa.String(300), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Index("ix_shares_principal", "principal", "kind"))
    sa.Table(
        "counters", md,
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False))
    return md


def upgrade() -> None:
    bind = op.get_bind()
    md = tables(sa.MetaData())
    md.create_all(bind)
    bind.execute(md.tables["counters"].insert().values(name="seq", value=0))


def downgrade() -> None:
    tables(sa.MetaData()).drop_all(op.get_bind())
