"""``Executor``: a ``concurrent.futures.Executor`` whose work runs on an endpoint.

::

    submit() -> TaskFuture --> queue --> [submitter thread] --POST /v1/tasks (batches)--> service
                  ^                                                                         |
                  +--- set_result / set_exception <-- [stream thread] <--WS results (group) -+

Task ids are made here, before anything is sent, so a result can never arrive
for a task the executor does not know, and a resubmitted batch is idempotent.
Under load the submitter drains the queue into batches; a lone task goes out at
once. One WebSocket per executor carries every result; nothing polls per task.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import queue
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from funcx_flows import serialize
from funcx_flows.errors import (
    EndpointOfflineWarning,
    FuncxFlowsError,
    ServiceUnavailable,
)
from funcx_flows.retry import Backoff, RetryPolicy
from funcx_flows.sdk.client import Client, b64encode, result_from_record
from funcx_flows.sdk.stream import ResultStream

log = logging.getLogger(__name__)

_STOP = object()


# payload bytes per submission: large arguments go out in several batches, so that
# the first run while the rest are stored (one larger argument is a batch of its own)
BATCH_MAX_BYTES = 3 << 20


class TaskFuture(cf.Future[Any]):
    """A future of one remote task; ``cancel()`` also cancels it on the service."""

    def __init__(self, task_id: str, executor: Executor) -> None:
        super().__init__()
        self.task_id = task_id
        self._executor = executor
        self.record: dict[str, Any] | None = None

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            self._executor._request_cancel([self.task_id])
        return cancelled


class Executor(cf.Executor):
    """Run calls on a funcx-flows endpoint, chosen by ``endpoint_id`` or ``endpoint`` name."""

    def __init__(
        self,
        endpoint_id: str | None = None,
        *,
        endpoint: str | None = None,
        client: Client | None = None,
        batch_size: int = 2000,
        resources: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        memoize: bool = False,
        original_exceptions: bool = True,
        cancel_on_close_s: float | None = None,
        resource_specification: Mapping[str, Any] | None = None,
        task_group_id: str | uuid.UUID | None = None,
    ) -> None:
        """``resource_specification`` and ``task_group_id`` are Globus Compute's names
        of ``resources`` and of the group the tasks share (their results' stream).

        ``original_exceptions``: a future of a call that raised raises the
        function's own exception, as ``ProcessPoolExecutor`` does (its remote
        traceback as ``__cause__``); False: ``RemoteExecutionError`` always.

        ``cancel_on_close_s``: tie the tasks to this process. When its result stream
        has been gone that long (the process was killed; or, too long, a network
        outage), the service cancels the tasks still unfinished. None: they run
        on, and their results wait for anyone to fetch them."""
        if endpoint_id and endpoint:
            raise ValueError("give endpoint_id or endpoint (a name), not both")
        if resources and resource_specification:
            raise ValueError("give resources or resource_specification (its Globus Compute "
                             "name), not both")
        target = endpoint_id or endpoint
        if not target:
            raise ValueError("an Executor needs endpoint_id= or endpoint=")
        self._own_client = client is None
        self.client = client or Client()
        self.endpoint_id = self.client.resolve_endpoint(target)
        self.group_id = str(task_group_id) if task_group_id else str(uuid.uuid4())
        self.batch_size = batch_size
        self.memoize = memoize
        self.original_exceptions = original_exceptions
        resources = resources or resource_specification
        self.resources = dict(resources) if resources else None
        self._retry = retry or RetryPolicy(initial=0.1, max_delay=5.0, max_attempts=20)
        self._futures: dict[str, TaskFuture] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cancel_queue: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._shutdown = False
        self._offline_checked = False
        self._broken: Exception | None = None  # the result stream gave up, for this
        self._stream = ResultStream(
            self.client.websocket_url,
            self.client.token,
            self._on_records,
            group_id=self.group_id,
            on_error=self._on_stream_error,
            binary=True,
            ca_bundle=self.client.ca_bundle,
            cancel_on_close_s=cancel_on_close_s,
        )
        self._stream.start()
        self._submitter = threading.Thread(
            target=self._submit_loop, name="funcx-executor-submit", daemon=True
        )
        self._submitter.start()

    # ------------------------------------------------------------ public --

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        self._check_open()
        function_id = self.client.register_function(fn, memoize=self.memoize)
        return self.submit_to_registered_function(function_id, args, kwargs)

    def _check_open(self) -> None:
        """As the standard library's executors say it (and before the closed HTTP
        client would say something else)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _warn_if_offline(self) -> None:
        """Once per executor, at its first task: tasks for an endpoint that is not
        connected wait on the service, which a bare TimeoutError would not tell."""
        self._offline_checked = True
        try:
            info = self.client.get_endpoint(self.endpoint_id)
        except FuncxFlowsError:
            return  # the submission itself will say what is wrong
        if info.get("state") != "online":
            warnings.warn(
                f"endpoint {info.get('name', self.endpoint_id)} ({self.endpoint_id}) is "
                f"{info.get('state', 'not connected')}: its tasks wait on the service until "
                "it connects (start it with `funcx-endpoint start NAME` on its host)",
                EndpointOfflineWarning, stacklevel=4)

    def submit_to_registered_function(
        self,
        function_id: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        resources: Mapping[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> TaskFuture:
        """``context``: what the worker sets up around the call (see
        ``serialize.pack_call``; the Prefect integration sends a task run's)."""
        self._check_open()
        if self._broken is not None:  # its results could never come back
            raise self._broken
        if not self._offline_checked:
            self._warn_if_offline()
        task_id = str(uuid.uuid4())
        task: dict[str, Any] = {
            "task_id": task_id,
            "function_id": function_id,
            "endpoint_id": self.endpoint_id,
            "group_id": self.group_id,
            # bytes: the binary result stream carries them as they are; base64 only
            # if the batch falls back to REST (``_send``)
            "payload": serialize.pack_call(tuple(args), dict(kwargs or {}), context),
        }
        res = resources or self.resources
        if res:
            task["resources"] = dict(res)
        future = TaskFuture(task_id, self)
        with self._lock:
            self._futures[task_id] = future
        self._queue.put(task)
        return future

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        self._check_open()
        function_id = self.client.register_function(fn)
        futures = [self.submit_to_registered_function(function_id, args) for args in zip(*iterables,
                                                                                           strict=False)]

        def results() -> Iterator[Any]:
            try:
                for f in futures:
                    yield f.result(timeout=timeout)
            finally:
                for f in futures:
                    f.cancel()

        return results()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        """An interruption (Ctrl-C, SystemExit...) cancels the outstanding tasks and
        leaves at once; otherwise the block's end waits for them, as any Executor's."""
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        self.shutdown(wait=not interrupted, cancel_futures=interrupted)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._futures)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if cancel_futures:
            with self._lock:
                futures = list(self._futures.values())
            for f in futures:
                f.cancel()
        if wait:
            with self._lock:
                futures = list(self._futures.values())
            cf.wait(futures)
        self._queue.put(_STOP)
        self._submitter.join(timeout=10)
        self._stream.close()
        if self._own_client:
            self.client.close()

    # ---------------------------------------------------------- internals --

    def _request_cancel(self, task_ids: list[str]) -> None:
        with self._lock:
            for t in task_ids:
                self._futures.pop(t, None)
        self._cancel_queue.put(task_ids)
        self._queue.put(None)  # wake the submitter

    def _take_batch(self) -> tuple[list[dict[str, Any]], bool]:
        """What is queued, up to ``batch_size`` tasks and about BATCH_MAX_BYTES of
        payload: large arguments go out in several requests, so that the first ones
        run while the rest are still being stored."""
        first = self._queue.get()
        batch: list[dict[str, Any]] = []
        size = 0
        stop = False
        item = first
        while True:
            if item is _STOP:
                stop = True
            elif item is not None:
                batch.append(item)
                size += len(item["payload"])
            if len(batch) >= self.batch_size or size >= BATCH_MAX_BYTES:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batch, stop

    def _submit_loop(self) -> None:
        while True:
            batch, stop = self._take_batch()
            # Calls cancelled before their batch went out are not sent at all; the
            # cancels of those sent go after them: a cancel that overtook its task
            # would name a task the service does not know yet, and the task would run.
            with self._lock:
                batch = [t for t in batch if t["task_id"] in self._futures]
            if batch:
                self._send(batch)
            self._flush_cancels()
            if stop:
                return

    def _flush_cancels(self) -> None:
        ids: list[str] = []
        while True:
            try:
                ids.extend(self._cancel_queue.get_nowait())
            except queue.Empty:
                break
        if ids:
            try:
                self.client.cancel_many(ids)
            except FuncxFlowsError as exc:
                log.warning("could not cancel %d tasks on the service: %s", len(ids), exc)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        backoff = Backoff(self._retry)
        while True:
            try:
                if self._stream.try_submit(batch) is None:
                    self.client.submit_tasks([{**t, "payload": b64encode(t["payload"])}
                                              for t in batch])
                return
            except ServiceUnavailable as exc:
                if self._retry.exhausted(backoff.attempt):
                    self._fail(batch, exc)
                    return
                delay = backoff.failed()
                log.warning("submission failed (%s); retrying in %.2fs", exc, delay)
                self._retry.sleep(delay)
            except FuncxFlowsError as exc:
                self._fail(batch, exc)
                return

    def _fail(self, batch: list[dict[str, Any]], exc: FuncxFlowsError) -> None:
        with self._lock:
            futures = [self._futures.pop(t["task_id"], None) for t in batch]
        for f in futures:
            if f is not None and f.set_running_or_notify_cancel():
                f.set_exception(exc)

    def _on_records(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            found = [(self._futures.pop(r["task_id"], None), r) for r in records]
        for future, record in found:
            if future is None or not future.set_running_or_notify_cancel():
                continue  # a duplicate, or cancelled here
            future.record = record
            try:
                future.set_result(result_from_record(
                    record, original_exceptions=self.original_exceptions))
            except Exception as exc:  # the task's own error, whatever its type
                future.set_exception(exc)

    def _on_stream_error(self, exc: Exception) -> None:
        self._broken = exc
        with self._lock:
            futures = list(self._futures.values())
            self._futures.clear()
        for f in futures:
            if f.set_running_or_notify_cancel():
                f.set_exception(exc)
