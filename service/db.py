"""Tables (SQLAlchemy Core) and the engine; SQLite in WAL mode or PostgreSQL.

Payloads, functions and results are stored as opaque bytes: the service never
unpickles them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError

from funcx_flows.errors import StorageUnavailable

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("user_id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

tokens = Table(
    "tokens", metadata,
    Column("token_id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.user_id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

functions = Table(
    "functions", metadata,
    Column("function_id", String(36), primary_key=True),
    Column("owner_id", String(36), ForeignKey("users.user_id"), nullable=False),
    Column("name", String(500), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("body_hash", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    # Repeated identical calls answer from a stored result (funcX's memoization).
    Column("memoize", Boolean, nullable=False, default=False),
    UniqueConstraint("owner_id", "body_hash", name="uq_function_owner_hash"),
)

endpoints = Table(
    "endpoints", metadata,
    Column("endpoint_id", String(36), primary_key=True),
    Column("owner_id", String(36), ForeignKey("users.user_id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("public_key", String(40), nullable=False, unique=True),
    Column("metadata", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float),
    # sha256 of the secret an endpoint presents on its WebSocket link (issued anew at
    # each registration; good for nothing else)
    Column("link_token_hash", String(64)),
    UniqueConstraint("owner_id", "name", name="uq_endpoint_owner_name"),
)

# Replicas (settings.cluster): which are alive (each says so every second); the
# replica that holds each endpoint's link and the status it last reported, so that
# any replica answers for it; and the per-user request buckets the replicas share
# (the rate limit counted once, not per process)
replicas = Table(
    "replicas", metadata,
    Column("name", String(200), primary_key=True),
    Column("seen_at", Float, nullable=False),
)

endpoint_links = Table(
    "endpoint_links", metadata,
    Column("endpoint_id", String(36), ForeignKey("endpoints.endpoint_id", ondelete="CASCADE"),
           primary_key=True),
    Column("replica", String(200), nullable=False),
    Column("online", Boolean, nullable=False),
    Column("info", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

rate_buckets = Table(
    "rate_buckets", metadata,
    Column("user_id", String(36), ForeignKey("users.user_id", ondelete="CASCADE"),
           primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("at", Float, nullable=False),
)

# The newest status report of each trigger process, per user (the dashboard's
# Triggers page; service/store/reports.py): in the database, so that every
# replica shows what any of them was sent, and a restart forgets nothing.
trigger_reports = Table(
    "trigger_reports", metadata,
    Column("user_id", String(36), ForeignKey("users.user_id", ondelete="CASCADE"),
           primary_key=True),
    Column("process", String(200), primary_key=True),
    Column("report", JSON, nullable=False),
    Column("received_at", Float, nullable=False),
)


def _partial(name: str, columns: tuple[str, ...], where: str) -> Index:
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(where))


tasks = Table(
    "tasks", metadata,
    Column("task_id", String(36), primary_key=True),
    Column("owner_id", String(36), nullable=False),
    Column("function_id", String(36), nullable=False),
    Column("endpoint_id", String(36), nullable=False),
    Column("group_id", String(64)),
    Column("state", String(24), nullable=False),
    Column("seq", BigInteger, nullable=False, default=0),
    Column("payload", LargeBinary),
    Column("resources", JSON),
    Column("result", LargeBinary),
    Column("error", JSON),
    Column("stdout", Text),
    Column("logs", JSON),  # the function's logging records (messages.LogRecord), if any
    Column("attempts", Integer, nullable=False, default=0),
    Column("t_received", Float),
    Column("t_waiting", Float),
    Column("t_dispatched", Float),
    Column("t_running", Float),
    Column("t_completed", Float),
    Column("memo_key", String(64)),  # sha256 of function id and payload, when memoized
    # SQLite only: 1 = the payload is in a file beside the database, 2 = the result is
    # (see Store, funcx_flows/blobfiles.py); the column is then NULL
    Column("blobs", Integer, nullable=False, default=0, server_default="0"),
    # The task's place in its submission batch: with t_received, the order submitted
    # (a returning endpoint is re-sent its tasks in that order)
    Column("batch_pos", Integer, nullable=False, default=0, server_default="0"),
    Index("ix_tasks_endpoint_state", "endpoint_id", "state"),
    # the per-user limit of tasks in flight counts a user's active tasks on each
    # submission: without it, the count read every task the user has kept
    Index("ix_tasks_owner_state", "owner_id", "state"),
    # a user's tasks newest first (store/listing.py): a page reads its rows, no more
    Index("ix_tasks_owner_received", "owner_id", "t_received", "task_id"),
    # Partial: a task enters each only when it has the value looked up (a memo key,
    # a completion sequence number, a completion time), so storing a task writes
    # three index pages fewer, and finishing one that is not memoized one fewer.
    # Queries on them name the indexed condition (``seq > 0``) or imply it.
    _partial("ix_tasks_memo_key", ("owner_id", "memo_key"), "memo_key IS NOT NULL"),
    _partial("ix_tasks_owner_done_seq", ("owner_id", "seq"), "seq > 0"),
    _partial("ix_tasks_done_at", ("t_completed",), "t_completed IS NOT NULL"),
)

# Who besides the owner may use a function or an endpoint (see service/store/sharing.py).
shares = Table(
    "shares", metadata,
    Column("kind", String(16), primary_key=True),
    Column("object_id", String(36), primary_key=True),
    Column("principal", String(300), primary_key=True),
    Column("created_at", Float, nullable=False),
    Index("ix_shares_principal", "principal", "kind"),
)

# One row: the last completion sequence number handed out.
counters = Table(
    "counters", metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 10
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def disk_problem(engine: Engine) -> str:
    """Why an SQLite database's folder cannot be written, when the cause is the disk
    (SQLite itself often says only "unable to open database file"); else ''."""
    if engine.url.get_backend_name() != "sqlite" or not engine.url.database:
        return ""
    folder = Path(engine.url.database).parent
    try:
        st = os.statvfs(folder)
    except OSError as exc:
        return f"{folder}: {exc.strerror}"
    if st.f_flag & os.ST_RDONLY:
        return f"{folder} is on a read-only file system"
    if st.f_bavail == 0:
        return f"the disk under {folder} is full"
    return ""


def storage_unavailable(exc: DBAPIError) -> StorageUnavailable:
    """The database refused (disk full, read-only, gone): the transaction was rolled
    back, so nothing of the request was stored. Says so, and that a retry may work."""
    cause = str(exc.orig).strip() or type(exc.orig).__name__
    return StorageUnavailable(f"the service cannot use its database ({cause}); nothing was "
                              "stored, try again later", cause=cause)


WAL_BACKSTOP_PAGES = 16_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA journal_size_limit=67108864")  # a burst's WAL shrinks back to 64 MB
    # Checkpoints run in the service's background thread (Store.checkpoint, each
    # CHECKPOINT_PERIOD_S): SQLite's own, every 1,000 pages, ran inside whichever
    # commit crossed the mark, a 3-4 ms stall of a task every ~55 tasks. This one
    # is only the backstop, should the thread fall behind (16,000 pages: 64 MB).
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def create_schema(engine: Engine) -> None:
    """Migrations up to this version's head (service/migrate.py)."""
    from funcx_flows.service.migrate import upgrade

    upgrade(engine)
