"""One Executor per (service, token, endpoint) in this process, shared by every
remote task and task runner, and the one way a Prefect task body calls remotely.

The Prefect task engine stays in the flow's process; only the function, its
arguments and the task run's context (ids, names, tags, log level: what
``prefect.runtime`` and ``get_run_logger()`` answer in the body) travel. What the
function printed and logged remotely is replayed, in order, into the task run's
log; an exception it raised is raised again here, with its own type. A Prefect
timeout or cancellation cancels the remote task, and so does the task runner
cancelling its tasks while the flow run is being interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from funcx_flows.globus_compute import Endpoint, GlobusComputeEndpoint, as_endpoint
from funcx_flows.messages import REMOTE_RUN_LOGGER
from funcx_flows.sdk.client import Client
from funcx_flows.sdk.executor import Executor

log = logging.getLogger(__name__)

OFFLINE_CHECK_S = 10.0
_WAIT_SLICE_S = 0.25
# A flow process killed outright (kill -9, out of memory) cannot cancel its remote
# tasks: the service does, once its result stream has been gone this long.
ORPHAN_GRACE_S = 60.0


@dataclass(frozen=True)
class Target:
    """Where remote calls go: an endpoint (name or id) of a funcx-flows service, or
    a Globus Compute endpoint (``GlobusComputeEndpoint`` or ``"gc:<uuid>"``; then
    ``service_url`` and ``token`` are not used)."""

    endpoint: Endpoint
    service_url: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", as_endpoint(self.endpoint))
        if isinstance(self.endpoint, GlobusComputeEndpoint) and (self.service_url or self.token):
            raise ValueError(f"{self.endpoint} is a Globus Compute endpoint: service_url and "
                             "token are funcx-flows' (its credentials are the Globus Compute "
                             "SDK's, docs/globus-compute.md)")


# What a backend's submission answers: a Future with the remote task's ``task_id``
# (None until Globus Compute has it) and ``record`` (funcx-flows': the output to replay).
RemoteFuture = cf.Future[Any]


class Backend(Protocol):
    """One endpoint's way of running calls: funcx-flows' Executor, or Globus
    Compute's (``funcx_flows.sdk.globus_compute``). ``cancels_remotely``: whether
    cancelling a future also stops the task where it runs."""

    cancels_remotely: bool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> RemoteFuture: ...
    def submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                    context: dict[str, Any] | None = None) -> RemoteFuture: ...
    def endpoint_state(self) -> str | None: ...
    def close(self) -> None: ...


class FuncxBackend:
    """A funcx-flows endpoint, through one Executor (one result stream)."""

    cancels_remotely = True

    def __init__(self, target: Target) -> None:
        client = Client(service_url=target.service_url, token=target.token)
        self.executor = Executor(endpoint=str(target.endpoint), client=client,
                                 cancel_on_close_s=ORPHAN_GRACE_S)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> RemoteFuture:
        return self.executor.submit(fn, *args, **kwargs)

    def submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any], context: dict[str, Any] | None = None
                    ) -> RemoteFuture:
        ex = self.executor
        return ex.submit_to_registered_function(ex.client.register_function(fn), args, kwargs,
                                                context=context)

    def endpoint_state(self) -> str | None:
        ex = self.executor
        state = ex.client.get_endpoint_status(ex.endpoint_id).get("state")
        return None if state is None else str(state)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor.client.close()


def _backend(target: Target) -> Backend:
    if isinstance(target.endpoint, GlobusComputeEndpoint):
        from funcx_flows.sdk.globus_compute import GlobusComputeBackend

        return GlobusComputeBackend(target.endpoint)
    return FuncxBackend(target)


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executors: dict[Target, Backend] = {}
        self._offline_checked: dict[Target, float] = {}

    def executor(self, target: Target) -> Backend:
        with self._lock:
            ex = self._executors.get(target)
            if ex is None:
                ex = _backend(target)
                self._executors[target] = ex
            return ex

    def endpoint_offline(self, target: Target) -> bool:
        """Whether the endpoint is offline (asked at most every OFFLINE_CHECK_S)."""
        now = time.monotonic()
        with self._lock:
            last = self._offline_checked.get(target, -OFFLINE_CHECK_S)
            if now - last < OFFLINE_CHECK_S:
                return False
            self._offline_checked[target] = now
        ex = self.executor(target)
        try:
            state = ex.endpoint_state()
        except Exception:  # the status is advice; the task itself will report errors
            return False
        return state != "online"

    def close(self) -> None:
        with self._lock:
            executors, self._executors = list(self._executors.values()), {}
        for ex in executors:
            ex.close()


registry = _Registry()
atexit.register(registry.close)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # outside a Prefect run
        return log


def _timeout_s() -> float | None:
    try:
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
    except Exception:
        return None
    return None if ctx is None else ctx.task.timeout_seconds


def call_context() -> dict[str, Any] | None:
    """What the worker tells the body about the task run it belongs to (see
    funcx_flows.endpoint.callcontext); None outside a task run."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:
        return None
    task_ctx = TaskRunContext.get()
    if task_ctx is None:
        return None
    run = task_ctx.task_run
    flow_ctx = FlowRunContext.get()
    flow_run: dict[str, Any] = {}
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        flow_run = {"id": str(flow_ctx.flow_run.id), "name": flow_ctx.flow_run.name,
                    "flow_name": flow_ctx.flow.name if flow_ctx.flow else None}
    elif run.flow_run_id is not None:
        flow_run = {"id": str(run.flow_run_id)}
    return {
        "prefect": {
            "task_run": {"id": str(run.id), "name": run.name, "task_name": task_ctx.task.name,
                         "tags": sorted(run.tags or ()), "run_count": run.run_count},
            "flow_run": flow_run,
        },
        "log_level": logging.getLogger("prefect.task_runs").getEffectiveLevel(),
    }


def start(target: Target, fn: Callable[..., Any], args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> RemoteFuture:
    """Submit one call; logs where it went (and that it waits, if the endpoint is offline)."""
    logger = _run_logger()
    ex = registry.executor(target)
    future = ex.submit_call(fn, args, kwargs, call_context())
    task_id = getattr(future, "task_id", None)
    if task_id is None:  # Globus Compute's id comes when its batch is sent
        logger.info("running %s on endpoint %s", getattr(fn, "__qualname__", fn),
                    target.endpoint)
    else:
        logger.info("running %s on endpoint %s as remote task %s",
                    getattr(fn, "__qualname__", fn), target.endpoint, task_id)
    if registry.endpoint_offline(target):
        logger.warning("endpoint %s is offline: the task waits for it (up to the task's "
                       "timeout)", target.endpoint)
    return future


def replay_output(record: dict[str, Any],
                  logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
    """Write what the function printed and logged into ``logger``, interleaved as it
    happened: a record goes after the lines printed before it. Prints and records
    of other loggers are marked "(remote ...)"; ``get_run_logger()``'s are as they
    were, as in a local run. (Parentheses, not brackets: ``prefect ... logs`` reads
    "[remote]" as Rich markup and drops it.)"""
    lines = (record.get("stdout") or "").splitlines(keepends=True)
    printed = line = 0

    def show(text: str) -> None:
        logger.info("(remote) %s", text.rstrip("\n"))

    for rec in record.get("logs") or ():
        at = int(rec.get("at") or 0)
        while line < len(lines) and printed + len(lines[line]) <= at:
            show(lines[line])
            printed += len(lines[line])
            line += 1
        level, name, message = int(rec["level"]), str(rec["name"]), str(rec["message"])
        if name == REMOTE_RUN_LOGGER:
            logger.log(level, "%s", message)
        else:
            logger.log(level, "(remote %s) %s", name, message)
    for rest in lines[line:]:
        show(rest)


def finish(future: RemoteFuture) -> Any:
    """The result of a completed future, after replaying its remote output."""
    record = getattr(future, "record", None)
    if record:
        replay_output(record, _run_logger())
    return future.result(timeout=0)


def _cancel(future: RemoteFuture, why: str, target: Target | None = None) -> None:
    if not future.done():
        future.cancel()
        if target is not None and not registry.executor(target).cancels_remotely:
            _run_logger().warning(
                "stopped waiting for remote task %s (%s); Globus Compute cannot cancel "
                "a submitted task: it runs on to its end on endpoint %s, its result "
                "unread", getattr(future, "task_id", None), why, target.endpoint)
            return
        _run_logger().warning("cancelled remote task %s: %s", getattr(future, "task_id", None),
                              why)


class _RunnerCancel:
    """Whether the flow's task runner (Prefect's ThreadPoolTaskRunner) cancelled this
    task run while the flow run was being interrupted.

    The runner sets a cancel event per task run when it shuts down, for every end of
    the flow; the flow run's state tells an interruption (still Running: Ctrl-C,
    SIGTERM) from its end (Completed or Failed: a local task would be let finish,
    and so is the remote one). Prefect offers no public way to this event; where
    it is missing, nothing is watched."""

    def __init__(self) -> None:
        self.event: threading.Event | None = None
        self.flow_run: Any = None
        try:
            from prefect.context import FlowRunContext, TaskRunContext
        except ImportError:
            return
        task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
        if task_ctx is None or flow_ctx is None:
            return
        events = getattr(flow_ctx.task_runner, "_cancel_events", None)
        event = events.get(task_ctx.task_run.id) if isinstance(events, dict) else None
        if isinstance(event, threading.Event):
            self.event, self.flow_run = event, flow_ctx.flow_run

    def interrupted(self) -> bool:
        if self.event is None or not self.event.is_set():
            return False
        state = getattr(self.flow_run, "state", None)
        return state is None or not state.is_final()


def call(target: Target, fn: Callable[..., Any], args: tuple[Any, ...],
         kwargs: dict[str, Any]) -> Any:
    """Run remotely and wait; interruptions (timeouts, cancellation) cancel remotely."""
    future = start(target, fn, args, kwargs)
    timeout = _timeout_s()
    deadline = None if timeout is None else time.monotonic() + timeout
    runner = _RunnerCancel()
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"remote task {getattr(future, 'task_id', None)} did not "
                                   f"finish within {timeout}s")
            if runner.interrupted():
                # what Prefect's own engine raises for a task run its runner cancelled
                raise asyncio.CancelledError("Task run cancelled by the task runner")
            try:
                future.result(timeout=_WAIT_SLICE_S if remaining is None
                              else min(_WAIT_SLICE_S, remaining))
                break
            except cf.TimeoutError:
                continue
            except Exception:
                break  # finished with an error: raised by finish()
    except BaseException as exc:
        _cancel(future, f"{type(exc).__name__}: {exc}", target)
        raise
    return finish(future)


async def call_async(target: Target, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    future = start(target, fn, args, kwargs)
    timeout = _timeout_s()
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
    except TimeoutError:
        _cancel(future, "timed out", target)
        raise TimeoutError(f"remote task {getattr(future, 'task_id', None)} did not finish "
                           f"within {timeout}s") from None
    except asyncio.CancelledError:
        _cancel(future, "cancelled", target)
        raise
    except Exception:
        pass  # finished with an error: raised by finish()
    return finish(future)
