"""Flow runs started in process, one after another, from a thread (a trigger's slot).

Where the ~1 s per flow run went (Prefect 3.8.8 and 3.9.1 alike, measured with a
no-op flow): ``flow_engine._send_heartbeats`` starts a thread that emits a
heartbeat and then sleeps in 1 s steps, and the end of every sync flow run joins
that thread, so a run waits until the current 1 s sleep is over. Without
heartbeats a no-op flow run took 0.1-0.17 s instead of 1.1 s. Heartbeats exist so
that a Prefect automation can find flow runs whose process died; a trigger finds
its own runs cut off by a crash (``funcx_flows.triggers.recovery``) and marks
them Crashed in Prefect, so its flow runs go without by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from funcx_flows.prefect.api_retry import API_RETRY, prefect_client
from funcx_flows.retry import RetryPolicy


@contextlib.contextmanager
def without_heartbeats() -> Iterator[None]:
    """Flow runs started in this context (this thread) send no heartbeats."""
    from prefect.settings import get_current_settings, temporary_settings

    flows = getattr(get_current_settings(), "flows", None)
    if getattr(flows, "heartbeat_frequency", None) is None:  # off already, or no such setting
        yield
        return
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


@contextlib.contextmanager
def in_process_runs(policy: RetryPolicy | None = None,
                    heartbeats: bool = False) -> Iterator[None]:
    """For a thread that starts flow runs in a row: one API client that retries
    transient answers on ``policy``, and (unless ``heartbeats``) no heartbeat wait."""
    with contextlib.ExitStack() as stack:
        if not heartbeats:
            stack.enter_context(without_heartbeats())
        stack.enter_context(prefect_client(policy or API_RETRY))
        yield
