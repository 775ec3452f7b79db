"""A real service and a real local endpoint, started once per module as processes:
once with a manager process per block (``local``), once with the workers forked
by the endpoint itself (``inline``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from funcx_flows.localstack import LocalStack, RunningEndpoint
from funcx_flows.sdk.client import Client


@pytest.fixture(scope="module", params=["local", "inline"])
def stack(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    s = LocalStack(Path(tmp_path_factory.mktemp("stack")) / "home")
    try:
        s.start_service()
        s.start_endpoint("ep", {"max_workers_per_node": 2, "heartbeat_period_s": 0.5,
                                "heartbeat_threshold_s": 5, "provider": request.param})
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def endpoint(stack: LocalStack) -> RunningEndpoint:
    return stack.endpoints["ep"]


@pytest.fixture
def client(stack: LocalStack) -> Iterator[Client]:
    c = stack.client()
    yield c
    c.close()
