"""The schema at start-up: Alembic migrations up to this version's head.

Every service process runs ``upgrade`` before it serves. With several replicas on
one PostgreSQL database the first one to take an advisory lock upgrades and the
others find the work done. A database whose schema is newer than this version
knows (a replica of the next version upgraded it) is refused with a message that
says so: this process would misread its rows. A database from before migrations
(tables, no ``alembic_version``) is brought to the baseline the way earlier
versions did it, then stamped, then upgraded.

    empty database      -> upgrade from nothing to head
    pre-migration       -> old columns and indexes added, stamp 0001, upgrade to head
    at a known revision -> upgrade to head (nothing to do at head)
    at an unknown one   -> refused: "upgrade this service"
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

from funcx_flows.errors import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
_LOCK_KEY = 0x66786673  # "fxfs": the advisory lock replicas take while upgrading

# What earlier versions added to databases made before each column or index, up to
# the baseline (later changes are revisions).
_LEGACY_COLUMNS = {("functions", "memoize"): "BOOLEAN NOT NULL DEFAULT FALSE",
                   ("tasks", "memo_key"): "VARCHAR(64)",
                   ("tasks", "blobs"): "INTEGER NOT NULL DEFAULT 0"}
_LEGACY_REPLACED_INDEXES = ("ix_tasks_memo", "ix_tasks_owner_seq", "ix_tasks_completed")
_INDEXES = {"ix_tasks_endpoint_state": ("endpoint_id, state", ""),
            "ix_tasks_owner_state": ("owner_id, state", ""),
            "ix_tasks_memo_key": ("owner_id, memo_key", "memo_key IS NOT NULL"),
            "ix_tasks_owner_done_seq": ("owner_id, seq", "seq > 0"),
            "ix_tasks_done_at": ("t_completed", "t_completed IS NOT NULL")}


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    rev = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert rev is not None
    return rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _upgrading(conn: Connection) -> Iterator[None]:
    """One process at a time (PostgreSQL: an advisory lock held by this session)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            conn.commit()
    else:
        yield


def upgrade(engine: Engine) -> None:
    """Bring the database to this version's head (see the module docstring)."""
    scripts = ScriptDirectory(str(MIGRATIONS))
    with engine.connect() as conn, _upgrading(conn):
        at = MigrationContext.configure(conn).get_current_revision()
        if at is not None and _unknown(scripts, at):
            raise ConfigError(
                f"the database's schema is at revision {at}, newer than this service knows "
                f"(its newest is {scripts.get_current_head()}): another replica of a newer "
                "version upgraded it; upgrade this service before starting it")
        cfg = _config(conn)
        if at is None and "tasks" in inspect(conn).get_table_names():
            _legacy_to_baseline(conn, scripts)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
        conn.commit()


def _unknown(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is None
    except Exception:  # alembic raises its own errors for a revision it has not
        return True


def _legacy_to_baseline(conn: Connection, scripts: ScriptDirectory) -> None:
    """A database made before migrations: the tables, columns and indexes earlier
    versions added at start-up, so that it matches revision 0001."""
    baseline = scripts.get_revision(BASELINE)
    assert baseline is not None
    baseline.module.tables(MetaData()).create_all(conn, checkfirst=True)
    insp = inspect(conn)
    present = {t: {c["name"] for c in insp.get_columns(t)} for t in ("functions", "tasks")}
    for (table, column), ddl in _LEGACY_COLUMNS.items():
        if column not in present[table]:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
    for name in _LEGACY_REPLACED_INDEXES:
        conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    indexes = {i["name"] for i in insp.get_indexes("tasks")}
    for name, (columns, where) in _INDEXES.items():
        if name not in indexes:
            conn.execute(text(f"CREATE INDEX {name} ON tasks ({columns})"
                              + (f" WHERE {where}" if where else "")))
    if conn.execute(text("SELECT 1 FROM counters WHERE name = 'seq'")).first() is None:
        conn.execute(text("INSERT INTO counters (name, value) VALUES ('seq', 0)"))
