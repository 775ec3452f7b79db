"""``@remote_task(endpoint=...)``: a Prefect task whose body runs on an endpoint.

The returned object is a real ``prefect.Task``: call it, ``.submit()`` it,
``.map()`` it, give it retries, timeouts, caching, tags and names as with any
task. Its function is a small proxy that ships the original function and its
arguments to the endpoint and waits for the result (asynchronously for
``async def`` functions), so that Prefect's engine, states, logs and result
persistence stay in the flow's process.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from prefect import Task

from funcx_flows.globus_compute import Endpoint
from funcx_flows.prefect import _remote
from funcx_flows.prefect._remote import Target

P = ParamSpec("P")
R = TypeVar("R")


def remote_proxy(fn: Callable[..., Any], target: Target,
                 force_async: bool = False) -> Callable[..., Any]:
    """A function with ``fn``'s signature (and source, for cache keys) that runs it
    remotely; a coroutine function when ``fn`` is one or ``force_async`` is set."""
    if force_async or inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def remote_async(*args: Any, **kwargs: Any) -> Any:
            return await _remote.call_async(target, fn, args, kwargs)

        remote_async.__funcx_remote__ = (fn, target)  # type: ignore[attr-defined]
        return remote_async

    @functools.wraps(fn)
    def remote(*args: Any, **kwargs: Any) -> Any:
        return _remote.call(target, fn, args, kwargs)

    remote.__funcx_remote__ = (fn, target)  # type: ignore[attr-defined]
    return remote


class _RemoteTimeoutWarning(logging.Filter):
    """Drops Prefect's warning that a task's timeout cannot interrupt the worker
    thread it runs in, for remote tasks: their wait is sliced, and the timeout
    cancels the remote task (``_remote.call``). Other tasks keep the warning."""

    PREFIX = "Timeout of %s seconds configured for this task, but the task is running in"

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(self.PREFIX)):
            return True
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
        return ctx is None or not hasattr(ctx.task.fn, "__funcx_remote__")


_filter_lock = threading.Lock()


def _quiet_thread_timeout_warning() -> None:
    logger = logging.getLogger("prefect.task_runs")
    with _filter_lock:
        if not any(isinstance(f, _RemoteTimeoutWarning) for f in logger.filters):
            logger.addFilter(_RemoteTimeoutWarning())


# the task keeps the function's signature, as ``@task`` does (ParamSpec)
@overload
def remote_task(fn: Callable[P, R], /, *, endpoint: Endpoint, service_url: str | None = None,
                token: str | None = None, **task_options: Any) -> Task[P, R]: ...


@overload
def remote_task(fn: None = None, /, *, endpoint: Endpoint, service_url: str | None = None,
                token: str | None = None,
                **task_options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def remote_task(fn: Callable[..., Any] | None = None, /, *, endpoint: Endpoint,
                service_url: str | None = None, token: str | None = None,
                **task_options: Any) -> Any:
    """Make ``fn`` a Prefect task that runs on ``endpoint``: a funcx-flows endpoint's
    name or id, or a Globus Compute endpoint (``GlobusComputeEndpoint("<uuid>")`` or
    ``"gc:<uuid>"``; docs/globus-compute.md says what differs there).

    ``task_options`` are those of ``prefect.task`` (``name``, ``retries``,
    ``retry_delay_seconds``, ``timeout_seconds``, ``cache_policy``, ``tags``,
    ``persist_result``...). Used as ``@remote_task(endpoint="hpc")`` or
    ``remote_task(existing_function, endpoint="hpc")``.
    """
    if not endpoint:
        raise ValueError("remote_task needs endpoint= (a name or an id)")
    target = Target(endpoint=endpoint, service_url=service_url, token=token)
    _quiet_thread_timeout_warning()

    def decorate(f: Callable[..., Any]) -> Task[Any, Any]:
        if isinstance(f, Task):
            raise TypeError("remote_task wraps a plain function, not a Prefect task; "
                            "apply it instead of @task")
        options = {"name": getattr(f, "__name__", None), **task_options}
        return Task(fn=remote_proxy(f, target), **options)

    return decorate if fn is None else decorate(fn)
