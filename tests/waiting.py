"""The one way tests wait for something that happens in another process or thread."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "a condition",
               interval: float = 0.02, proc: subprocess.Popen[Any] | None = None,
               detail: Callable[[], object] | None = None) -> T:
    """Call ``predicate`` until it returns something true; that value. Fails the test
    with ``what`` (and what ``detail`` returns then: a log's tail) after ``timeout``
    seconds (a bound, never a measurement), or at once if ``proc`` (the process that
    should make it happen) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}"
                                 + _detail(detail))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + _detail(detail))
        time.sleep(interval)


def _detail(detail: Callable[[], object] | None) -> str:
    return "" if detail is None else f"\n{detail()}"


def task_state(client: Any, task_id: str) -> str | None:
    """The task's state, or None while the service has not got it (an Executor's
    future has its id before its submit thread has sent it)."""
    from funcx_flows.errors import NotFound

    try:
        return str(client.get_task(task_id)["state"])
    except NotFound:
        return None


FINISHED = ("success", "failed", "cancelled")


def finished_task(client: Any, task_id: str, timeout: float = 60.0,
                  states: tuple[str, ...] = FINISHED) -> dict[str, Any]:
    """The task's record once its state is one of ``states`` (by default: any end)."""

    def record() -> dict[str, Any] | None:
        r: dict[str, Any] = client.get_task(task_id)
        return r if r["state"] in states else None

    return wait_until(record, timeout, f"task {task_id} to reach {'/'.join(states)}")
