"""The tests' PostgreSQL database: FUNCX_FLOWS_TEST_POSTGRES_URL, or under
pytest-xdist a database of the worker's own beside it (``funcx_test_gw1``),
created on first use. Tests reset the schema of their database (DROP SCHEMA
public), so two workers must never share one."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def _worker_url(url: str, worker: str) -> str:
    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                            {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _url() -> str:
    url = os.environ.get("FUNCX_FLOWS_TEST_POSTGRES_URL", "")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return _worker_url(url, worker) if url and worker else url


PG_URL = _url()
