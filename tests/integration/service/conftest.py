"""A real service process (no endpoint) with small limits, and two users; a store on
each database the service supports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import stacks
from stacks import PG_URL, create_token, reset_postgres, running

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


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running(Path(tmp_path_factory.mktemp("svc")) / "home",
                 env={"FUNCX_FLOWS_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT)}) as stack:
        url = stack.service_url
        token_a = (stack.home / "token").read_text().strip()
        token_b = create_token(stack, "bob")
        a = httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token_a}"},
                         timeout=30)
        b = httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token_b}"},
                         timeout=30)
        try:
            yield Api(stack, url, a, b)
        finally:
            a.close()
            b.close()


@pytest.fixture(scope="module")
def cli(api: Api):  # type: ignore[no-untyped-def]
    return lambda *args: stacks.cli(api.stack, *args)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path, need) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    """The store on SQLite (WAL) and on PostgreSQL (a clean schema per test)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    else:
        need(bool(PG_URL), "PostgreSQL: set FUNCX_FLOWS_TEST_POSTGRES_URL")
        reset_postgres(PG_URL)
        engine = make_engine(PG_URL)
    s = Store(engine)
    s.create_schema()
    yield s
    engine.dispose()
