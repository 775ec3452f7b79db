"""``remote_map``: one function over N inputs as ONE Prefect task.

A Prefect task run costs several milliseconds in the flow's process; 10,000
inputs as 10,000 task runs would cost more than the work. ``remote_map`` runs a
single task whose body fans the calls out through one Executor (batched
submissions, one result stream), logs progress, and returns the results in
input order. When some inputs fail it raises ``PartialFailure`` naming which
inputs failed and why (or, with ``return_exceptions=True``, returns the errors
in their slots).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Iterable
from typing import Any

from funcx_flows.errors import PartialFailure
from funcx_flows.globus_compute import Endpoint
from funcx_flows.prefect import _remote
from funcx_flows.prefect._remote import RemoteFuture, Target

RemoteMapError = PartialFailure
_SHOWN_FAILURES = 10


def _fan_out(target: Target, fn: Callable[..., Any], calls: list[tuple[Any, ...]],
             return_exceptions: bool, progress_every_s: float) -> list[Any]:
    logger = _remote._run_logger()
    ex = _remote.registry.executor(target)
    timeout = _remote._timeout_s()
    deadline = None if timeout is None else time.monotonic() + timeout
    futures: list[RemoteFuture] = []
    try:
        futures = [ex.submit(fn, *args) for args in calls]
        logger.info("remote_map: %d calls of %s on endpoint %s", len(futures),
                    getattr(fn, "__qualname__", fn), target.endpoint)
        if futures and _remote.registry.endpoint_offline(target):
            logger.warning("endpoint %s is offline: the calls wait for it", target.endpoint)
        pending: set[cf.Future[Any]] = set(futures)
        last_report = time.monotonic()
        while pending:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"remote_map: {len(pending)} of {len(futures)} calls "
                                   f"unfinished after {timeout}s")
            step = 0.5 if remaining is None else min(0.5, remaining)
            _, pending = cf.wait(pending, timeout=step)
            if time.monotonic() - last_report >= progress_every_s and pending:
                last_report = time.monotonic()
                logger.info("remote_map: %d/%d done", len(futures) - len(pending),
                            len(futures))
    except BaseException as exc:
        for f in futures:
            f.cancel()
        logger.warning("remote_map interrupted (%s): %s", type(exc).__name__,
                       "cancelled the unfinished calls" if ex.cancels_remotely else
                       "stopped waiting for the unfinished calls (Globus Compute cannot "
                       "cancel them: they run on to their end)")
        raise
    results: list[Any] = []
    failures: dict[int, BaseException] = {}
    for i, f in enumerate(futures):
        err = f.exception(timeout=0)
        if err is None:
            results.append(f.result(timeout=0))
        else:
            failures[i] = err
            results.append(err)
    logger.info("remote_map: %d/%d succeeded", len(futures) - len(failures), len(futures))
    if failures and not return_exceptions:
        shown = "; ".join(f"[{i}] {type(e).__name__}: {e}"
                          for i, e in list(failures.items())[:_SHOWN_FAILURES])
        more = f" (and {len(failures) - _SHOWN_FAILURES} more)" \
            if len(failures) > _SHOWN_FAILURES else ""
        raise PartialFailure(
            f"{len(failures)} of {len(futures)} inputs failed: {shown}{more}",
            failures=failures, results=results, failed_indices=sorted(failures))
    return results


def _in_flow_run() -> bool:
    try:
        from prefect.context import FlowRunContext

        return FlowRunContext.get() is not None
    except ImportError:
        return False


def remote_map(fn: Callable[..., Any], *iterables: Iterable[Any], endpoint: Endpoint,
               service_url: str | None = None, token: str | None = None,
               return_exceptions: bool = False, progress_every_s: float = 5.0,
               **task_options: Any) -> list[Any]:
    """``[fn(*args) for args in zip(*iterables)]``, run on ``endpoint`` (a funcx-flows
    endpoint's name or id, or a Globus Compute endpoint: ``GlobusComputeEndpoint``
    or ``"gc:<uuid>"``).

    In a flow run this is one Prefect task (``task_options`` are those of
    ``prefect.task``: name, retries, timeout_seconds, tags...); outside one it
    simply runs."""
    if not iterables:
        raise TypeError("remote_map needs at least one iterable of inputs")
    target = Target(endpoint=endpoint, service_url=service_url, token=token)
    calls = list(zip(*iterables, strict=False))

    def body() -> list[Any]:
        return _fan_out(target, fn, calls, return_exceptions, progress_every_s)

    if not _in_flow_run():
        return body()
    from prefect import Task
    from prefect.cache_policies import NO_CACHE

    name = task_options.pop("name", None) or f"remote_map-{getattr(fn, '__name__', 'fn')}"
    # The body is a closure over the inputs: a source-and-inputs cache key would
    # mistake one map for another.
    task_options.setdefault("cache_policy", NO_CACHE)
    task: Task[[], list[Any]] = Task(fn=body, name=name, **task_options)
    return task()
