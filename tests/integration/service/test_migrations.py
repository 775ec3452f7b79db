"""The schema under Alembic: a database from before migrations (the schema main had
when replicas were planned) is upgraded with its rows; a fresh one is made at the
head; a newer schema is refused; replicas upgrading at once do it once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from pgurl import PG_URL

from funcx_flows.errors import ConfigError
from funcx_flows.service import migrate
from funcx_flows.service.db import make_engine
from funcx_flows.service.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path, need) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        e = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    else:
        need(bool(PG_URL), "PostgreSQL: set FUNCX_FLOWS_TEST_POSTGRES_URL")
        e = make_engine(PG_URL)
        with e.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    yield e
    e.dispose()


def _baseline_tables() -> sa.MetaData:
    """The tables as main made them before migrations (revision 0001 is that schema)."""
    rev = ScriptDirectory(str(migrate.MIGRATIONS)).get_revision(migrate.BASELINE)
    assert rev is not None
    md: sa.MetaData = rev.module.tables(sa.MetaData())
    return md


def test_a_database_from_before_migrations_is_upgraded_with_its_rows(engine):
    old = _baseline_tables()
    old.create_all(engine)  # what create_all made then: no alembic_version
    uid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    with engine.begin() as conn:
        t = old.tables
        conn.execute(t["counters"].insert().values(name="seq", value=41))
        conn.execute(t["users"].insert().values(user_id=uid, name="alice", created_at=1.0))
        conn.execute(t["tasks"].insert().values(
            task_id=tid, owner_id=uid, function_id="f", endpoint_id="e", state="success",
            seq=41, attempts=1, blobs=0))
    assert migrate.current(engine) is None
    store = Store(engine)
    store.create_schema()
    assert migrate.current(engine) == migrate.head()
    insp = sa.inspect(engine)
    columns = {c["name"] for c in insp.get_columns("tasks")}
    assert {"batch_pos", "logs"} <= columns
    assert "link_token_hash" in {c["name"] for c in insp.get_columns("endpoints")}
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT state, seq, batch_pos FROM tasks")).one()
        seq = conn.execute(sa.text("SELECT value FROM counters WHERE name='seq'")).scalar()
    assert tuple(row) == ("success", 41, 0) and seq == 41
    # the store works on it, and a second start changes nothing
    alice = store.ensure_user("alice")
    assert alice.user_id == uid
    store.create_schema()
    assert migrate.current(engine) == migrate.head()


def test_a_fresh_database_is_made_at_the_head(engine):
    Store(engine).create_schema()
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT value FROM counters WHERE name='seq'")).scalar() == 0


def test_a_schema_newer_than_this_service_knows_is_refused(engine):
    Store(engine).create_schema()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_next'"))
    with pytest.raises(ConfigError) as refused:
        Store(engine).create_schema()
    assert "newer than this service knows" in str(refused.value)
    assert "9999_next" in str(refused.value) and migrate.head() in str(refused.value)


def test_replicas_starting_together_upgrade_once(need):
    """(PostgreSQL only: replicas need it; SQLite serves one process.)"""
    need(bool(PG_URL), "PostgreSQL: set FUNCX_FLOWS_TEST_POSTGRES_URL")
    engine = make_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            Store(make_engine(PG_URL)).create_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # (without the advisory lock they deadlock)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "the replicas' upgrades deadlocked"
    assert errors == []
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM counters")).scalar() == 1
    engine.dispose()


def test_the_migrations_make_the_schema_the_code_declares(engine):
    """A column added to service/db.py without a migration (or the reverse) fails
    here, not on a facility's database."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from funcx_flows.service.db import metadata

    Store(engine).create_schema()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
