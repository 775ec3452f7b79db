"""A real Prefect server (prefect_test_harness) and a real funcx-flows stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from funcx_flows.localstack import LocalStack


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[LocalStack]:
    s = LocalStack(Path(tmp_path_factory.mktemp("pf")) / "home")
    saved = {k: os.environ.get(k) for k in ("FUNCX_FLOWS_HOME", "FUNCX_FLOWS_EXAMPLE_ENDPOINT")}
    try:
        s.start_service()
        s.start_endpoint("ep", {"max_workers_per_node": 2, "heartbeat_period_s": 0.5,
                                "heartbeat_threshold_s": 5})
        os.environ["FUNCX_FLOWS_HOME"] = str(s.home)
        os.environ["FUNCX_FLOWS_EXAMPLE_ENDPOINT"] = "ep"
        yield s
    finally:
        from funcx_flows.prefect._remote import registry

        registry.close()
        s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def flow_logs(flow_run_id: Any) -> list[str]:
    """Messages the Prefect API holds for a flow run (its tasks included)."""
    return [message for _, message in flow_log_records(flow_run_id)]


def flow_log_records(flow_run_id: Any) -> list[tuple[int, str]]:
    """(level, message) of a flow run's logs (its tasks included), oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC)
    return [(log.level, log.message) for log in logs]


def task_runs(flow_run_id: Any) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return list(client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id]))))
