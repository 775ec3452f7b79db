"""A finished task's record turned into its value, or into the error it carries
(the function's own exception where it can be rebuilt here): shared by the
Client's fetches, the Executor's result stream and Globus Compute's shapes of
them (``get_batch_result``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from funcx_flows import serialize
from funcx_flows.errors import (
    RemoteExecutionError,
    SerializationError,
    TaskCancelled,
    TaskError,
    TaskPending,
    task_error_from_code,
)
from funcx_flows.sdk.batch import b64decode

TERMINAL_STATES = frozenset({"success", "failed", "cancelled"})


def original_exception(error: Mapping[str, Any], remote: RemoteExecutionError) -> Exception | None:
    """The exception the function raised, rebuilt from the pickle the worker sent,
    with ``remote`` (the remote traceback) as its ``__cause__``; or None, having
    said in ``remote.not_original`` why not."""
    data = error.get("exception")
    if not data:
        remote.not_original = ("the worker did not send it (it could not be pickled there, "
                               "or the endpoint runs an older funcx-flows)")
        return None
    try:
        exc = serialize.unpack(data if isinstance(data, bytes) else b64decode(data),
                               what="the exception")
    except SerializationError as err:
        remote.not_original = f"it cannot be unpickled here: {err.message}"
        return None
    if not isinstance(exc, Exception):
        remote.not_original = (f"{type(exc).__name__} is not an Exception; raising it here "
                               "would stop the client")
        return None
    exc.__cause__ = remote
    return exc


def result_from_record(record: Mapping[str, Any], *, original_exceptions: bool = True) -> Any:
    """Turn a terminal task record into its value, or raise the error it carries.

    ``original_exceptions``: when the function raised, raise its own exception
    (its class, its attributes; the remote traceback in ``__cause__``), as a local
    call would, instead of ``RemoteExecutionError``. The latter remains when the
    exception cannot be rebuilt here, saying why (``not_original``)."""
    state = record.get("state")
    if state == "success":
        data = record["result"]  # bytes from a binary (msgpack) result stream
        return serialize.unpack(data if isinstance(data, bytes) else b64decode(data),
                                what="result")
    if state in ("failed", "cancelled"):
        err = record.get("error") or {}
        code = err.get("code") or (TaskCancelled.code if state == "cancelled"
                                   else TaskError.code)
        exc = task_error_from_code(
            code,
            err.get("message") or f"task {record.get('task_id')} {state}",
            remote_type=err.get("remote_type", ""),
            remote_traceback=err.get("remote_traceback", ""),
        )
        exc.details.setdefault("task_id", record.get("task_id"))
        if original_exceptions and isinstance(exc, RemoteExecutionError):
            original = original_exception(err, exc)
            if original is not None:
                raise original
        raise exc
    raise TaskPending(f"task {record.get('task_id')} is {state}", task_id=record.get("task_id"))
