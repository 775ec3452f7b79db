"""What the Prefect API holds about a flow run: its logs and its task runs (the
Prefect tests' helpers, importable from any folder)."""

from __future__ import annotations

from typing import Any

# The threads of the executors that remote tasks keep, one per endpoint, in a
# registry that the stack's fixture closes (funcx_flows.prefect._remote.registry).
REMOTE_TASK_THREADS = ("funcx-executor-submit", "funcx-result-stream")

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
