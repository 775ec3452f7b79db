"""A real Prefect server (prefect_test_harness) and a real funcx-flows stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from guards import threads_outlive_tests
from prefectruns import REMOTE_TASK_THREADS
from stacks import running

from funcx_flows.localstack import LocalStack


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prefect_server: None,
          request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    threads_outlive_tests(request.node.nodeid, *REMOTE_TASK_THREADS)
    saved = {k: os.environ.get(k) for k in ("FUNCX_FLOWS_HOME", "FUNCX_FLOWS_EXAMPLE_ENDPOINT")}
    try:
        with running(Path(tmp_path_factory.mktemp("pf")) / "home", endpoints={"ep": {}}) as s:
            os.environ["FUNCX_FLOWS_HOME"] = str(s.home)
            os.environ["FUNCX_FLOWS_EXAMPLE_ENDPOINT"] = "ep"
            try:
                yield s
            finally:
                from funcx_flows.prefect._remote import registry

                registry.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
