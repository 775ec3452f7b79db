"""The one error tree of funcx-flows, shared by the SDK, the service and the endpoint.

(One module past 400 lines on purpose: the tree is the contract every part shares,
and a code or status is checked against its siblings at a glance.)

Every error a user can meet is a ``FuncxFlowsError``. Each class carries a stable
``code`` (how it crosses the wire and the REST API) and an ``http_status`` (how the
service answers it), so that the service, the endpoint and the client agree on
what went wrong without sharing anything but this module::

    FuncxFlowsError
     +-- ConfigError                  a config file or setting is invalid
     +-- SerializationError           bytes could not be (de)serialized
     |    +-- PythonVersionMismatch   client and worker run different Python minors
     +-- ProtocolError                a malformed or unknown wire message
     +-- ServiceError                 the service refused a request
     |    +-- InvalidRequest          400/422: the request is malformed
     |    +-- AuthenticationError     401: missing, unknown or revoked token
     |    +-- PermissionDenied        403: not yours and not shared with you
     |    +-- NotFound                404: no such function / endpoint / task
     |    +-- Conflict                409: clashes with existing state
     |    +-- PayloadTooLarge         413: over the size limit
     |    +-- RateLimited             429: over a per-user limit
     |    +-- ServiceUnavailable      503 / connection refused: service not reachable
     |         +-- StorageUnavailable 503: the service's database cannot be written
     +-- TaskPending                  the task has not finished yet
     +-- TaskError                    a task ended without a value
     |    +-- RemoteExecutionError    the function raised; carries the remote traceback
     |    +-- TaskCancelled           cancelled by its owner (or a timeout)
     |    +-- ResultTooLarge          the result is over the size limit
     |    +-- PartialFailure          some calls of a batched map failed
     |    +-- EndpointDeleted         its endpoint was deleted before it finished
     |    +-- SystemFailure           the machinery under the task failed
     |         +-- WorkerLost         the worker process died mid-task
     |         +-- ManagerLost        the node's manager stopped heartbeating
     |         +-- PilotEnded         the pilot job (block) ended under the task
     |         +-- ArgumentsLost      the service lost the stored arguments
     +-- TransferFailed               a Globus transfer failed or was refused
     +-- TransferStatusUnknown        a Globus transfer was submitted; whether it runs is unknown
     +-- TimedOut                     a wait passed its deadline (also a TimeoutError)
     |    +-- CommandTimedOut         a shell or MPI command ran past its walltime
     +-- CommandError                 a shell or MPI command could not run as asked
     |    +-- CommandFailed           it exited non-zero and the call asked to raise
     +-- EndpointError                endpoint life-cycle problems (CLI)
          +-- EndpointNotConfigured
          +-- EndpointAlreadyRunning
          +-- EndpointNotRunning

One warning sits beside the tree: ``EndpointOfflineWarning`` (a ``UserWarning``),
once per Executor whose endpoint is not connected when its first task is sent.

``error_from_code`` rebuilds the right class from a code received on the wire,
``task_error_from_code`` the error a task ended with; ``code_for_status`` names
the service error an HTTP status means, for an answer that carries no code (a
proxy's, or the web framework's own), on both sides of the REST API.

A task's failure is never a refusal of a request (a ``ServiceError``): a task
on a deleted endpoint ends ``EndpointDeleted``, not ``NotFound``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FuncxFlowsError(Exception):
    """Root of every error raised by funcx-flows."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    also_statuses: ClassVar[tuple[int, ...]] = ()  # other HTTP statuses that mean it

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class ConfigError(FuncxFlowsError):
    """A configuration file or setting is invalid."""

    code = "config_error"
    http_status = 400


class SerializationError(FuncxFlowsError):
    """Data could not be serialized or deserialized."""

    code = "serialization_error"
    http_status = 400


class PythonVersionMismatch(SerializationError):
    """The payload was made by a different Python minor version than the worker runs."""

    code = "python_version_mismatch"


class ProtocolError(FuncxFlowsError):
    """A wire message was malformed, of an unknown kind or of an unsupported version."""

    code = "protocol_error"
    http_status = 400


class ServiceError(FuncxFlowsError):
    """The service refused or could not serve a request."""

    code = "service_error"
    http_status = 500


class InvalidRequest(ServiceError):
    """The request is malformed."""

    code = "invalid_request"
    http_status = 422
    # a body that does not parse (400), a method the route does not take (405)
    also_statuses: ClassVar[tuple[int, ...]] = (400, 405)


class AuthenticationError(ServiceError):
    """The bearer token is missing, unknown, expired or revoked."""

    code = "authentication_failed"
    http_status = 401


class PermissionDenied(ServiceError):
    """The resource belongs to someone else and was not shared with you."""

    code = "permission_denied"
    http_status = 403


class NotFound(ServiceError):
    """No such resource."""

    code = "not_found"
    http_status = 404


class Conflict(ServiceError):
    """The request clashes with existing state."""

    code = "conflict"
    http_status = 409


class PayloadTooLarge(ServiceError):
    """The payload is over the size limit."""

    code = "payload_too_large"
    http_status = 413


class RateLimited(ServiceError):
    """A per-user limit was exceeded."""

    code = "rate_limited"
    http_status = 429


class ServiceUnavailable(ServiceError):
    """The service cannot be reached or is not ready."""

    code = "service_unavailable"
    http_status = 503


class StorageUnavailable(ServiceUnavailable):
    """The service's database cannot be written (disk full, read-only); nothing was stored."""

    code = "storage_unavailable"


class TaskPending(FuncxFlowsError):
    """The task has not finished yet."""

    code = "task_pending"
    http_status = 409


class TaskError(FuncxFlowsError):
    """A task ended without producing a value."""

    code = "task_error"
    http_status = 400


class RemoteExecutionError(TaskError):
    """The function raised an exception on the worker.

    The SDK raises the function's own exception instead (this one is its
    ``__cause__``, with the remote traceback) unless asked not to, or unless that
    exception cannot be rebuilt in the client: then ``not_original`` says why."""

    code = "remote_exception"

    def __init__(
        self,
        message: str = "",
        *,
        remote_type: str = "",
        remote_traceback: str = "",
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.not_original = ""

    def __str__(self) -> str:
        # the worker's message starts with the type's name ("ValueError: bad value 1"):
        # the type is said once, qualified only when the message does not say it
        short = self.remote_type.rpartition(".")[2]
        head = self.message if not self.remote_type or self.message.startswith(
            f"{short}:") else f"{self.remote_type}: {self.message}"
        if self.remote_traceback:
            head = f"{head}\n\nRemote traceback:\n{self.remote_traceback}"
        if self.not_original:
            head = f"{head}\n(Raised instead of the original exception: {self.not_original}.)"
        return head

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["remote_type"] = self.remote_type
        out["remote_traceback"] = self.remote_traceback
        return out


class TaskCancelled(TaskError):
    """The task was cancelled before it finished."""

    code = "cancelled"


class ResultTooLarge(TaskError):
    """The function's result is over the size limit."""

    code = "result_too_large"


class PartialFailure(TaskError):
    """Some calls of a batched map failed; ``failures`` maps input index to its error
    and ``results`` holds the values, with the errors in the failed slots."""

    code = "partial_failure"

    def __init__(self, message: str = "", *, failures: dict[int, BaseException] | None = None,
                 results: list[Any] | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.failures = failures or {}
        self.results = results or []


class EndpointDeleted(TaskError):
    """The task's endpoint was deleted before the task finished."""

    code = "endpoint_deleted"


class FunctionNotAllowed(TaskError):
    """The endpoint refused to run the function: it is not on its allow-list (the
    service refuses such a submission itself while it knows the list)."""

    code = "function_not_allowed"


class SystemFailure(TaskError):
    """The machinery under the task failed (not the function itself)."""

    code = "system_failure"


class WorkerLost(SystemFailure):
    """The worker process running the task died."""

    code = "worker_lost"


class ManagerLost(SystemFailure):
    """The manager of the node running the task stopped heartbeating."""

    code = "manager_lost"


class PilotEnded(SystemFailure):
    """The pilot job (block) running the task ended."""

    code = "pilot_ended"


class ArgumentsLost(SystemFailure):
    """The service lost the task's stored arguments (a file beside its database)."""

    code = "arguments_lost"


class TransferFailed(FuncxFlowsError):
    """A Globus transfer ended in failure (or could not be submitted); the message is Globus's."""

    code = "transfer_failed"


class TransferStatusUnknown(FuncxFlowsError):
    """A Globus transfer was submitted but Globus never said whether it accepted it.

    Not a ``TransferFailed``: the transfer may be running. Its submission id is
    kept, so running the step again with the same key finds out (Globus answers a
    repeated submission id with the task it made) instead of starting another."""

    code = "transfer_status_unknown"
    http_status = 502


class EndpointOfflineWarning(UserWarning):
    """Tasks were sent to an endpoint that is not connected: they wait on the service
    until it connects, and a ``result(timeout=...)`` meanwhile only times out. Not an
    error (an endpoint may be started later on purpose); filter it with ``warnings``."""


class TimedOut(FuncxFlowsError, TimeoutError):
    """A wait passed its deadline; what it waited for was cancelled where that was possible.

    Also a ``TimeoutError``, so ``except TimeoutError`` keeps working and Prefect
    records the task run as ``TimedOut`` (and retries it if it has retries left)."""

    code = "timed_out"
    http_status = 504


class CommandTimedOut(TimedOut):
    """A shell or MPI command ran past its walltime; its whole process group was killed."""

    code = "command_timed_out"


class CommandError(FuncxFlowsError, ValueError):
    """A shell or MPI command could not run as asked: a template key the call did not
    give, a resource request no block can hold, no MPI launcher. Raised on the worker
    (and by the caller for what it can see before submitting)."""

    code = "command_error"
    http_status = 400


class CommandFailed(CommandError):
    """A shell or MPI command exited with a non-zero code and the call asked
    (``check=True``) for that to be an error. ``result`` holds what it printed."""

    code = "command_failed"

    def __init__(self, message: str = "", result: Any = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.result = result


class ContainerError(TaskError):
    """A task asked for a container image (``resources={"container_image": ...}``) that
    could not be had: the endpoint runs no container engine, the engine has no such
    image, or the container ended before the task did."""

    code = "container_error"


class EndpointError(FuncxFlowsError):
    """An endpoint life-cycle operation failed."""

    code = "endpoint_error"
    http_status = 400


class EndpointNotConfigured(EndpointError):
    """The endpoint has no configuration; run `funcx-endpoint configure NAME` first."""

    code = "endpoint_not_configured"


class EndpointAlreadyRunning(EndpointError):
    """The endpoint is already running."""

    code = "endpoint_already_running"


class EndpointNotRunning(EndpointError):
    """The endpoint is not running."""

    code = "endpoint_not_running"


def _all_subclasses(cls: type[FuncxFlowsError]) -> list[type[FuncxFlowsError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


ERRORS_BY_CODE: dict[str, type[FuncxFlowsError]] = {
    c.code: c for c in _all_subclasses(FuncxFlowsError)
}


def _statuses() -> dict[int, str]:
    """HTTP status -> the code of the most general service error answered with it."""
    out: dict[int, str] = {}
    for cls in _all_subclasses(ServiceError)[1:]:  # parents come before their children
        for status in (cls.http_status, *cls.also_statuses):
            out.setdefault(status, cls.code)
    return out


STATUS_CODES: dict[int, str] = _statuses()


def code_for_status(status: int) -> str:
    """The code of an HTTP error answer that carries none."""
    return STATUS_CODES.get(status, ServiceError.code)


def error_from_code(code: str, message: str, **extra: Any) -> FuncxFlowsError:
    """Rebuild an error received on the wire; unknown codes become the nearest root."""
    cls = ERRORS_BY_CODE.get(code, FuncxFlowsError)
    if cls is RemoteExecutionError or issubclass(cls, RemoteExecutionError):
        return cls(
            message,
            remote_type=str(extra.get("remote_type", "")),
            remote_traceback=str(extra.get("remote_traceback", "")),
        )
    details = extra.get("details")
    return cls(message, **(details if isinstance(details, dict) else {}))


# Codes that services and endpoints before these classes wrote for task failures.
_TASK_CODES_BEFORE = {"not_found": EndpointDeleted.code, "storage_error": ArgumentsLost.code,
                      "permission_denied": FunctionNotAllowed.code}


def task_error_from_code(code: str, message: str, **extra: Any) -> FuncxFlowsError:
    """The error a task ended with, from its record: never a refusal of a request.
    A worker's own kinds stay (``SerializationError``, ``PythonVersionMismatch``...);
    a service code, from an older peer, becomes the plain ``TaskError``, with the
    code it came with in ``details["code"]``."""
    exc = error_from_code(_TASK_CODES_BEFORE.get(code, code), message, **extra)
    if not isinstance(exc, ServiceError):
        return exc
    out = TaskError(message, **exc.details)
    out.details["code"] = code
    return out
