"""``EndpointTaskRunner``: every task a flow submits runs on one endpoint.

    @flow(task_runner=EndpointTaskRunner(endpoint="hpc"))
    def pipeline(paths):
        frames = load.map(paths)          # each call runs on "hpc"
        return summarize.submit(frames)   # futures pass between tasks as usual

Prefect's task engine runs in the flow's process, on one event-loop thread of
the runner: each submitted task becomes an engine coroutine whose body awaits
its remote call, so thousands of tasks can be in flight without a thread each.
Upstream futures (in parameters and ``wait_for``, inside ``allow_failure`` and
``unmapped`` too, but not inside ``quote``: as Prefect's engine resolves them) are
awaited without blocking that loop before a task's engine starts. The runner
pickles as its configuration, as Prefect's runners must.

When the flow run is interrupted (Ctrl-C, SIGTERM: the runner is left with an
exception that is not an ``Exception``), the task runs still in flight are
cancelled, and with them their remote tasks; Prefect records them Crashed. A flow
that ends otherwise waits for them, as with Prefect's own runners.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import functools
import inspect
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from prefect.futures import PrefectConcurrentFuture, PrefectFuture
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import quote
from prefect.utilities.collections import visit_collection

from funcx_flows.globus_compute import Endpoint
from funcx_flows.prefect._remote import Target
from funcx_flows.prefect.task import remote_proxy

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import RunInput


CANCEL_WAIT_S = 10.0  # how long an interrupted flow waits for its task runs to record it


def _uuid7() -> uuid.UUID:
    try:
        from prefect.types._datetime import uuid7  # type: ignore[attr-defined]

        return uuid7()  # type: ignore[no-any-return]
    except ImportError:
        return uuid.uuid4()


class EndpointTaskRunner(TaskRunner[PrefectConcurrentFuture[Any]]):
    def __init__(self, endpoint: Endpoint, *, service_url: str | None = None,
                 token: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not endpoint:
            raise ValueError("EndpointTaskRunner needs endpoint= (a name or an id)")
        self._target = Target(endpoint, service_url, token)  # "gc:<uuid>" parsed here
        self.endpoint = self._target.endpoint
        self.service_url = service_url
        self.token = token
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._remote: dict[int, tuple[Task[Any, Any], Task[Any, Any]]] = {}
        self._outstanding: set[cf.Future[Any]] = set()
        self._engines: set[asyncio.Task[Any]] = set()  # touched on the loop only
        self._lock = threading.Lock()
        self._client_ctx: Any = None

    # ------------------------------------------------------------ config --

    def duplicate(self) -> EndpointTaskRunner:
        return type(self)(self.endpoint, service_url=self.service_url, token=self.token)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EndpointTaskRunner)
                and (self.endpoint, self.service_url, self.token)
                == (other.endpoint, other.service_url, other.token))

    def __hash__(self) -> int:
        return hash((type(self), self.endpoint, self.service_url, self.token))

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "service_url": self.service_url, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["endpoint"], service_url=state["service_url"],  # type: ignore[misc]
                      token=state["token"])

    # -------------------------------------------------------- life cycle --

    def __enter__(self) -> EndpointTaskRunner:
        super().__enter__()
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="funcx-task-runner", daemon=True)
        self._thread.start()
        ready.wait()
        # One Prefect API client for every engine on this loop: without it each task
        # run builds its own (an SSL context each, ~80 ms here).
        opened: cf.Future[Any] = cf.Future()
        loop.call_soon_threadsafe(self._start, self._open_client(),
                                  contextvars.copy_context(), opened)
        self._client_ctx = opened.result(timeout=60)
        return self

    async def _open_client(self) -> Any:
        from prefect.context import AsyncClientContext

        ctx = AsyncClientContext()
        await ctx.client.__aenter__()
        return ctx

    async def _close_client(self) -> None:
        if self._client_ctx is not None:
            await self._client_ctx.client.__aexit__(None, None, None)
            self._client_ctx = None

    def cancel_all(self) -> None:
        """Cancel the task runs in flight (their remote tasks too); Prefect calls
        this when a flow run is terminated."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_engines)

    def _cancel_engines(self) -> None:
        for engine in list(self._engines):
            engine.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        with self._lock:
            outstanding = list(self._outstanding)
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.cancel_all()  # interrupted: do not wait for the work
            left = cf.wait(outstanding, timeout=CANCEL_WAIT_S).not_done
            if left:
                self.logger.warning("%d task runs did not record their cancellation within "
                                    "%.0f s", len(left), CANCEL_WAIT_S)
        else:
            cf.wait(outstanding)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            closed: cf.Future[Any] = cf.Future()
            loop.call_soon_threadsafe(self._start, self._close_client(),
                                      contextvars.copy_context(), closed)
            cf.wait([closed], timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
        self._loop = self._thread = None
        super().__exit__(exc_type, *exc)

    # ------------------------------------------------------------ submit --

    def _remote_version(self, task: Task[Any, Any]) -> Task[Any, Any]:
        """The task with the same options whose body awaits a remote call."""
        hit = self._remote.get(id(task))
        if hit is not None and hit[0] is task:
            return hit[1]
        fn, target = getattr(task.fn, "__funcx_remote__", (task.fn, self._target))
        remote = task.with_options()
        remote.fn = remote_proxy(fn, target, force_async=True)
        remote.isasync = True
        if not task.isasync:
            condition = task.retry_condition_fn
            if condition is not None and _plain(condition):
                remote.retry_condition_fn = _as_for_sync_task(condition, task)
            for hooks in ("on_completion_hooks", "on_failure_hooks", "on_running_hooks"):
                setattr(remote, hooks, [_as_for_sync_task(h, task) if _plain(h) else h
                                        for h in getattr(task, hooks)])
        self._remote[id(task)] = (task, remote)
        return remote

    def submit(
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[RunInput]] | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        loop = self._loop
        if not self._started or loop is None:
            raise RuntimeError("the task runner is not started")
        remote = self._remote_version(task)
        task_run_id = _uuid7()
        future: cf.Future[Any] = cf.Future()
        coro = self._run(remote, task_run_id, parameters, list(wait_for or ()), dependencies)
        context = contextvars.copy_context()
        with self._lock:
            self._outstanding.add(future)
        future.add_done_callback(self._done)
        loop.call_soon_threadsafe(self._start, coro, context, future)
        return PrefectConcurrentFuture(task_run_id=task_run_id, wrapped_future=future)

    def _done(self, future: cf.Future[Any]) -> None:
        with self._lock:
            self._outstanding.discard(future)

    def _start(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context,
               future: cf.Future[Any]) -> None:
        assert self._loop is not None
        t = self._loop.create_task(coro, context=context)
        self._engines.add(t)

        def copy(done: asyncio.Task[Any]) -> None:
            self._engines.discard(done)
            if done.cancelled():
                future.cancel()
                future.set_running_or_notify_cancel()  # else cf.wait never sees it done
            elif done.exception() is not None:
                future.set_exception(done.exception())
            else:
                future.set_result(done.result())

        t.add_done_callback(copy)

    async def _run(self, task: Task[Any, Any], task_run_id: uuid.UUID,
                   parameters: dict[str, Any], wait_for: list[PrefectFuture[Any]],
                   dependencies: dict[str, set[RunInput]] | None) -> Any:
        from prefect.context import AsyncClientContext
        from prefect.task_engine import run_task_async

        if self._client_ctx is not None:  # this task's context only
            AsyncClientContext.__var__.set(self._client_ctx)
        await _settle(_upstream(parameters, wait_for))
        return await run_task_async(
            task=task, task_run_id=task_run_id, parameters=parameters,
            wait_for=wait_for or None, return_type="state", dependencies=dependencies)


def _plain(fn: Any) -> bool:
    return callable(fn) and not inspect.iscoroutinefunction(fn)


def _as_for_sync_task(fn: Callable[..., Any], task: Task[Any, Any]) -> Callable[..., Any]:
    """A retry condition or state hook of a sync task, called as Prefect calls it for
    that task. The runner runs every engine asynchronously, and in an async task's
    context Prefect's dual APIs (``state.result()``...) answer coroutines: so it runs
    in a thread, seeing the task itself (not its async stand-in) in its context."""

    @functools.wraps(fn)
    async def called(_stand_in: Any, task_run: Any, state: Any) -> Any:
        from prefect.context import TaskRunContext

        context = contextvars.copy_context()
        run = TaskRunContext.get()
        if run is not None:
            context.run(TaskRunContext.__var__.set, run.model_copy(update={"task": task}))
        return await asyncio.to_thread(context.run, fn, task, task_run, state)

    return called


def _upstream(*exprs: Any) -> list[PrefectFuture[Any]]:
    """The futures Prefect's engine would wait for: in collections and annotations
    (``allow_failure``, ``unmapped``), not under ``quote`` (passed as they are)."""
    found: list[PrefectFuture[Any]] = []

    def visit(expr: Any, context: dict[str, Any]) -> Any:
        if isinstance(expr, PrefectFuture) and not isinstance(context.get("annotation"), quote):
            found.append(expr)
        return expr

    for expr in exprs:
        visit_collection(expr, visit_fn=visit, return_data=False, context={})
    return found


async def _settle(futures: list[PrefectFuture[Any]]) -> None:
    """Wait for upstream futures without blocking the loop (the engine would block)."""
    loop = asyncio.get_running_loop()
    for f in futures:
        wrapped = getattr(f, "wrapped_future", None)
        if isinstance(wrapped, cf.Future):
            await asyncio.wait([asyncio.wrap_future(wrapped)])
        else:
            await loop.run_in_executor(None, f.wait)
