"""A real service and a real local endpoint, started once per module as processes:
once with a manager process per block (``local``), once with the workers forked
by the endpoint itself (``inline``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stacks import running

from funcx_flows.localstack import LocalStack, RunningEndpoint
from funcx_flows.sdk.client import Client


@pytest.fixture(scope="module", params=["local", "inline"])
def stack(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    with running(Path(tmp_path_factory.mktemp("stack")) / "home",
                 endpoints={"ep": {"provider": request.param}}) as s:
        yield s


@pytest.fixture(scope="module")
def endpoint(stack: LocalStack) -> RunningEndpoint:
    return stack.endpoints["ep"]


@pytest.fixture
def client(stack: LocalStack) -> Iterator[Client]:
    c = stack.client()
    yield c
    c.close()
