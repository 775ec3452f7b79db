"""A real service process (no endpoint) with small limits, and two users; a store on
each database the service supports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from funcx_flows.localstack import LocalStack
from funcx_flows.service.db import make_engine
from funcx_flows.service.store import Store

PAYLOAD_LIMIT = 64 * 1024


@dataclass
class Api:
    stack: LocalStack
    url: str
    alice: httpx.Client  # the bootstrap (local) user
    bob: httpx.Client  # a second user

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/v1", timeout=30)


def _cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from funcx_flows.cli import main; main()",
                           *args], env=stack.env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    stack = LocalStack(Path(tmp_path_factory.mktemp("svc")) / "home",
                       env={"FUNCX_FLOWS_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT)})
    try:
        url = stack.start_service()
        token_a = (stack.home / "token").read_text().strip()
        out = _cli(stack, "token", "create", "--user", "bob")
        assert out.returncode == 0, out.stderr
        token_b = out.stdout.strip().splitlines()[-1]
        a = httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token_a}"},
                         timeout=30)
        b = httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token_b}"},
                         timeout=30)
        yield Api(stack, url, a, b)
        a.close()
        b.close()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def cli(api: Api):  # type: ignore[no-untyped-def]
    return lambda *args: _cli(api.stack, *args)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path, need) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    """The store on SQLite (WAL) and on PostgreSQL (a clean schema per test)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    else:
        pg_url = os.environ.get("FUNCX_FLOWS_TEST_POSTGRES_URL", "")
        need(bool(pg_url), "PostgreSQL: set FUNCX_FLOWS_TEST_POSTGRES_URL")
        engine = make_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    s = Store(engine)
    s.create_schema()
    yield s
    engine.dispose()
