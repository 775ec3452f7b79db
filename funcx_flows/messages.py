"""Typed, versioned wire messages for every ZeroMQ hop.

Each message is a ``msgspec.Struct`` tagged by its ``op`` field and carrying a
protocol version ``v``; it is encoded as msgpack. User functions, arguments and
results ride inside as opaque ``bytes`` (see ``funcx_flows.serialize``); nothing
here is pickled. Decoding validates types, so a malformed frame becomes a
``ProtocolError`` and never reaches application code.

Hops and the messages they carry (a client's result stream: ``streamwire.py``)::

    service (ROUTER) <-> agent (DEALER)           SERVICE_TO_AGENT / AGENT_TO_SERVICE
    agent (DEALER)   <-> interchange (ROUTER)     AGENT_TO_INTERCHANGE / INTERCHANGE_TO_AGENT
    interchange (ROUTER) <-> manager (DEALER)     INTERCHANGE_TO_MANAGER / MANAGER_TO_INTERCHANGE

Task and result records are batched (lists) on every hop; a batch of one is
the degenerate case, not a separate message kind.

Compatibility: a field added later has a default and is left out when it holds
it (``omit_defaults``), and decoders ignore fields they do not know, so peers of
the same protocol version but different releases understand each other (an older
one simply lacks what the newer field carries). ``v`` changes only when a message
would mean something else to an older peer.
"""

from __future__ import annotations

from typing import Any, TypeVar, Union

import msgspec

from funcx_flows.errors import ProtocolError

PROTOCOL_VERSION = 1


class Record(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A plain nested record (not a message by itself)."""


class Message(msgspec.Struct, kw_only=True, tag_field="op", omit_defaults=True):
    """Base of every wire message; ``op`` is the tag, ``v`` the protocol version."""

    v: int = PROTOCOL_VERSION


# --------------------------------------------------------------- records ----


class ResourceSpec(Record, kw_only=True):
    """Per-task resource hints honoured by the interchange when placing work."""

    cores: int = 1
    gpus: int = 0
    walltime_s: float | None = None
    # MPI tasks (funcx_flows/mpi.py): nodes and ranks lent from the block
    num_nodes: int | None = None
    ranks_per_node: int | None = None
    num_ranks: int | None = None
    # a container image the task runs in, kept warm by the manager (endpoint/warmpool.py)
    container_image: str | None = None


class TaskSpec(Record, kw_only=True):
    """One task as it travels from the service to a worker."""

    task_id: str
    function_id: str
    function: bytes  # serialized function envelope
    payload: bytes  # serialized (args, kwargs) envelope
    resources: ResourceSpec | None = None
    attempt: int = 0  # how many times it was already tried on a system failure
    # Opaque to the service: extra options for the worker (e.g. capture_output).
    options: dict[str, Any] = {}


class ErrorInfo(Record, kw_only=True):
    """Why a task failed, in terms of ``funcx_flows.errors`` codes."""

    code: str
    message: str
    remote_type: str = ""
    remote_traceback: str = ""
    # The exception the function raised, pickled by the worker (a serialize
    # envelope; empty when it could not be pickled). Opaque to the service: only
    # the client unpickles it, to raise the original type.
    exception: bytes = b""


# The logger a remote Prefect task body gets from ``get_run_logger()``: the client
# writes its records into the task run's log as they are, like a local run's.
REMOTE_RUN_LOGGER = "funcx_flows.remote_run"


class LogRecord(Record, kw_only=True):
    """A ``logging`` record the function emitted, as the worker captured it."""

    created: float  # unix time
    level: int
    name: str  # the logger's name
    message: str  # formatted, with the traceback when it logged one
    at: int = 0  # how much of the task's stdout had been written then: orders the two


class TaskResult(Record, kw_only=True):
    """The outcome of one task; exactly one of ``data`` / ``error`` is meaningful."""

    task_id: str
    ok: bool
    data: bytes = b""  # serialized result envelope when ok
    error: ErrorInfo | None = None
    stdout: str = ""  # what the function printed (stdout and stderr), truncated
    logs: list[LogRecord] = []  # the logging records it emitted, in order (limited)
    started_at: float = 0.0  # unix time the worker started the function
    finished_at: float = 0.0
    attempts: int = 1


class TaskState(Record, kw_only=True):
    """A non-terminal state change reported upstream (today: running)."""

    task_id: str
    state: str  # "running"
    at: float


class ManagerInfo(Record, kw_only=True):
    manager_id: str
    hostname: str
    block_id: str = ""
    workers: int = 0
    busy: int = 0
    cores: int = 0
    gpus: int = 0
    draining: bool = False
    last_heartbeat: float = 0.0


class BlockLoad(Record, kw_only=True):
    """What the managers of one block have: the strategy scales blocks by it."""

    block_id: str
    managers: int = 0
    workers: int = 0
    busy: int = 0


class BlockInfo(Record, kw_only=True):
    block_id: str
    job_id: str = ""  # the scheduler's native job id
    state: str = ""  # pending | running | ended | failed | cancelled
    nodes: int = 1
    submitted_at: float = 0.0
    message: str = ""  # scheduler's reason when it failed


# ---------------------------------------------------- service <-> agent ----


class Hello(Message, tag="hello", kw_only=True):
    """First message of an agent after each (re)connect."""

    endpoint_id: str
    agent_version: str
    python_version: str
    hostname: str
    # Tasks the agent still holds (queued or running), so the service re-sends only the rest.
    held_task_ids: list[str] = []


class Welcome(Message, tag="welcome", kw_only=True):
    """The service's answer to Hello."""

    heartbeat_period_s: float
    heartbeat_threshold_s: float
    max_result_bytes: int = 10 * 1024 * 1024


class Heartbeat(Message, tag="heartbeat", kw_only=True):
    sent_at: float


class Tasks(Message, tag="tasks", kw_only=True):
    tasks: list[TaskSpec]


class Cancel(Message, tag="cancel", kw_only=True):
    task_ids: list[str]


class TaskStates(Message, tag="task_states", kw_only=True):
    states: list[TaskState]


class Results(Message, tag="results", kw_only=True):
    results: list[TaskResult]
    free: int = 0  # manager -> interchange only: capacity freed (as in Ready), riding along


class ResultsAck(Message, tag="results_ack", kw_only=True):
    """The service has made these results durable; the agent may drop them from its spool."""

    task_ids: list[str]


class EndpointStatus(Message, tag="status", kw_only=True):
    """Periodic status of an endpoint (agent -> service), or of an interchange (-> agent)."""

    workers_total: int = 0
    workers_busy: int = 0
    tasks_queued: int = 0
    tasks_running: int = 0
    managers: list[ManagerInfo] = []  # at most MAX_LISTED_MANAGERS, most recently heard
    managers_total: int = 0
    block_load: list[BlockLoad] = []  # every block with managers
    blocks: list[BlockInfo] = []
    recent_errors: list[str] = []


class Bye(Message, tag="bye", kw_only=True):
    """Orderly goodbye before a peer goes away on purpose."""

    reason: str = ""


# ------------------------------------------------ interchange <-> manager ----


class ManagerRegister(Message, tag="manager_register", kw_only=True):
    manager_id: str
    hostname: str
    block_id: str = ""
    workers: int
    cores: int
    gpus: int = 0
    python_version: str
    # Unix time after which the manager takes no new work (its pilot's walltime end).
    drain_at: float | None = None


class Ready(Message, tag="ready", kw_only=True):
    """The manager can take ``free`` more tasks."""

    free: int


class Requeue(Message, tag="requeue", kw_only=True):
    """Manager -> interchange: these tasks (queued here, not started) should go to
    other managers: they turned out long, and this manager holds more than it can
    start soon. The interchange puts them back at the head of its queue."""

    task_ids: list[str]


class Drain(Message, tag="drain", kw_only=True):
    """Manager -> interchange: I take no more tasks (walltime near or shutting down)."""

    reason: str = ""


class Shutdown(Message, tag="shutdown", kw_only=True):
    reason: str = ""


# ---------------------------------------------------------- the unions ----

SERVICE_TO_AGENT = Union[Welcome, Heartbeat, Tasks, Cancel, ResultsAck, Bye]  # noqa: UP007
AGENT_TO_SERVICE = Union[Hello, Heartbeat, TaskStates, Results, EndpointStatus, Bye]  # noqa: UP007
AGENT_TO_INTERCHANGE = Union[Tasks, Cancel, Heartbeat, Shutdown]  # noqa: UP007
INTERCHANGE_TO_AGENT = Union[TaskStates, Results, EndpointStatus, Heartbeat]  # noqa: UP007
INTERCHANGE_TO_MANAGER = Union[Tasks, Cancel, Heartbeat, Shutdown]  # noqa: UP007
WORKER_INPUT = Union[Tasks, Cancel]  # noqa: UP007  (manager -> worker, over its pipe)
MANAGER_TO_INTERCHANGE = Union[  # noqa: UP007
    ManagerRegister, Ready, TaskStates, Results, Requeue, Heartbeat, Drain, Bye
]

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode

M = TypeVar("M")


class Decoder:
    """Decode frames of one direction of one hop; anything else is a ProtocolError."""

    def __init__(self, union: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(union)

    def decode(self, frame: bytes | memoryview) -> Message:
        try:
            msg: Message = self._decoder.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            # (msgspec lets a string that is not UTF-8 through as UnicodeDecodeError)
            raise ProtocolError(f"malformed message: {exc}") from exc
        if msg.v != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {msg.v} (this side speaks {PROTOCOL_VERSION})"
            )
        return msg


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe a funcx-flows error for the wire."""
    from funcx_flows.errors import FuncxFlowsError, RemoteExecutionError

    if isinstance(exc, RemoteExecutionError):
        return ErrorInfo(
            code=exc.code,
            message=exc.message,
            remote_type=exc.remote_type,
            remote_traceback=exc.remote_traceback,
        )
    if isinstance(exc, FuncxFlowsError):
        return ErrorInfo(code=exc.code, message=exc.message)
    return ErrorInfo(code="error", message=f"{type(exc).__name__}: {exc}")


def cancelled_result(spec: TaskSpec, finished_at: float = 0.0) -> TaskResult:
    """The answer for a task cancelled before it ran (manager, worker and
    interchange all give this one)."""
    return TaskResult(task_id=spec.task_id, ok=False, attempts=spec.attempt,
                      finished_at=finished_at,
                      error=ErrorInfo(code="cancelled", message="cancelled by the user"))
