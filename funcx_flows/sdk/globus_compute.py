"""The Globus Compute backend: the unmodified ``globus_compute_sdk`` Client and
Executor behind the small interface the Prefect integration drives for
funcx-flows endpoints (``funcx_flows.prefect._remote.Backend``).

::

    remote task --submit_call--> GlobusComputeBackend --Executor.submit--> Globus Compute (REST)
        ^                             |                                          |
        +--- GCFuture (errors in our  +<--- ComputeFuture <--- result watcher <--+ AMQP result queue
             tree, local cancel)

Credentials are the SDK's: ``GLOBUS_COMPUTE_CLIENT_ID`` / ``_SECRET`` (a client
identity; the SDK fetches a token itself), else the login the SDK stored in
``~/.globus_compute/storage.db``. A missing login is an error here, not an
interactive prompt in the middle of a flow run.

What Globus Compute cannot do is said where it shows (docs/globus-compute.md):
a task cannot be cancelled once submitted (the SDK has no call for it:
``cancel()`` forgets it here, the endpoint runs it to its end), the function's
own exception does not travel (the endpoint sends its traceback as text, raised
here as ``RemoteExecutionError``), and a task run's Prefect context and remote
log lines are not carried.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from funcx_flows.errors import (
    ConfigError,
    FuncxFlowsError,
    RemoteExecutionError,
    ServiceUnavailable,
    code_for_status,
    error_from_code,
)
from funcx_flows.globus_compute import GlobusComputeEndpoint, require_sdk

log = logging.getLogger(__name__)

_LAST_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")


def translate_error(exc: BaseException) -> BaseException:
    """An error of the SDK or of the Globus Compute service in our tree, the
    original as its ``__cause__``: a task's ``TaskExecutionFailed`` becomes
    ``RemoteExecutionError`` (type and message read from its traceback's last
    line), an API refusal the ``ServiceError`` its HTTP status means."""
    if isinstance(exc, FuncxFlowsError):
        return exc
    import globus_sdk
    from globus_compute_sdk.errors import TaskExecutionFailed

    out: FuncxFlowsError
    if isinstance(exc, TaskExecutionFailed):
        text = str(exc.remote_data or "").rstrip()
        last = text.splitlines()[-1].strip() if text else ""
        match = _LAST_LINE.match(last)
        remote_type, message = (match.group(1), match.group(2) or "") if match else ("", last)
        out = RemoteExecutionError(message or "the function raised on the Globus Compute "
                                   "endpoint", remote_type=remote_type.rsplit(".", 1)[-1],
                                   remote_traceback=text)
        out.not_original = ("Globus Compute endpoints send the traceback as text, "
                            "not the exception")
    elif isinstance(exc, globus_sdk.GlobusAPIError):
        out = error_from_code(code_for_status(exc.http_status),
                              f"Globus Compute answered {exc.http_status}: {exc.text[:500]}")
    elif isinstance(exc, globus_sdk.NetworkError):
        out = ServiceUnavailable(f"cannot reach Globus Compute: {exc}")
    else:
        return exc
    out.__cause__ = exc
    return out


class GCFuture(cf.Future[Any]):
    """One task's ``ComputeFuture`` seen as ours: errors translated, and a
    ``cancel()`` that only lets go of it (Globus Compute has no cancel)."""

    def __init__(self, inner: cf.Future[Any]) -> None:
        super().__init__()
        self.inner = inner
        self.record: dict[str, Any] | None = None  # no remote log to replay
        inner.add_done_callback(self._copy)

    @property
    def task_id(self) -> str | None:
        """Known once the SDK's batch reached the service (None before)."""
        tid = getattr(self.inner, "task_id", None)
        return None if tid is None else str(tid)

    def _copy(self, inner: cf.Future[Any]) -> None:
        if inner.cancelled():
            self.cancel()
            return
        if not self.set_running_or_notify_cancel():
            return  # cancelled here: the endpoint's answer is dropped
        exc = inner.exception()
        if exc is None:
            self.set_result(inner.result())
        else:
            self.set_exception(translate_error(exc))


def _login_missing(app: Any) -> bool:
    import globus_sdk

    return isinstance(app, globus_sdk.UserApp) and bool(app.login_required())


def make_client(environment: str | None = None) -> Any:
    """The SDK's ``Client`` for ``environment``, logged in, its version checked."""
    sdk = require_sdk()
    import globus_sdk

    env = environment or os.environ.get("GLOBUS_SDK_ENVIRONMENT") or None
    try:
        client = sdk.Client(environment=env, do_version_check=False)
    except ValueError as exc:  # e.g. a client secret without its id
        raise ConfigError(f"Globus Compute credentials: {exc}") from exc
    if _login_missing(client.app):
        raise ConfigError(
            "no Globus Compute login: set GLOBUS_COMPUTE_CLIENT_ID and "
            "GLOBUS_COMPUTE_CLIENT_SECRET (a client identity), or log in once "
            "interactively (python -c 'from globus_compute_sdk import Client; Client()')")
    try:
        client.version_check()
    except (globus_sdk.GlobusError, OSError) as exc:
        raise translate_error(exc) from exc
    return client


class GlobusComputeBackend:
    """Runs calls on one Globus Compute endpoint through one SDK Executor (one
    task group, one AMQP result queue)."""

    cancels_remotely = False

    def __init__(self, endpoint: GlobusComputeEndpoint, *,
                 resource_specification: Mapping[str, Any] | None = None) -> None:
        sdk = require_sdk()
        self.endpoint = endpoint
        self.endpoint_id = endpoint.endpoint_id
        self.client = make_client(endpoint.environment)
        self.executor = sdk.Executor(endpoint_id=endpoint.endpoint_id, client=self.client,
                                     resource_specification=dict(resource_specification)
                                     if resource_specification else None)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> GCFuture:
        return GCFuture(self.executor.submit(fn, *args, **kwargs))

    def submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any], context: dict[str, Any] | None = None) -> GCFuture:
        """``context`` (a Prefect task run's) has no place on Globus Compute's wire."""
        return self.submit(fn, *args, **kwargs)

    def endpoint_state(self) -> str | None:
        """"online", "offline"... as Globus Compute reports the endpoint."""
        answer = self.client.get_endpoint_status(self.endpoint_id)
        state = answer.get("status") if isinstance(answer, Mapping) else None
        return None if state is None else str(state)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
