"""Request and response bodies of the REST API (see docs/protocol.md)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from funcx_flows.errors import CommandError, InvalidRequest
from funcx_flows.mpi import MPIRequest
from funcx_flows.service.api.fields import Id, Metadata, Name, TaskIdIn, Text, Z85Key


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def decode_b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{what} is not valid base64: {exc}", field=what) from None


class FunctionIn(Body):
    name: Name = Field(min_length=1, max_length=500)
    function: str = Field(min_length=1, description="base64 of a serialized function envelope")
    description: Text = Field("", max_length=10_000)
    memoize: bool = Field(False, description="answer repeated identical calls from the "
                                             "stored result of the first")


class FunctionCreated(BaseModel):
    function_id: str
    created: bool


class FunctionInfo(BaseModel):
    function_id: str
    name: str
    description: str
    body_hash: str
    created_at: float
    memoize: bool = False
    owned: bool = True  # False: shared with you by its owner
    function: str | None = None


class FunctionList(BaseModel):
    functions: list[FunctionInfo]


class EndpointIn(Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    public_key: Z85Key = Field(description="CurveZMQ key, Z85")
    metadata: Metadata = Field(default_factory=dict, description=(
        "JSON, at most 64 KiB and 8 levels deep; finite numbers; text without control "
        "characters but tab and line breaks"))


class EndpointCreated(BaseModel):
    endpoint_id: str
    service_public_key: str
    zmq_url: str
    created: bool
    link_token: str = Field(description=(
        "the endpoint's secret for its WebSocket link (WS /v1/endpoints/{id}/link); "
        "a new one at each registration"))


class EndpointInfo(BaseModel):
    endpoint_id: str
    name: str
    state: str
    created_at: float
    last_seen: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    owned: bool = True  # False: shared with you by its owner


class EndpointStatusOut(EndpointInfo):
    model_config = ConfigDict(extra="allow")
    workers_total: int = 0
    workers_busy: int = 0
    tasks_queued: int = 0
    tasks_running: int = 0
    tasks_waiting: int = 0
    managers: list[dict[str, Any]] = Field(
        default_factory=list, description="the most recently heard managers, at most 100")
    managers_total: int = 0
    blocks: list[dict[str, Any]] = Field(default_factory=list)
    recent_errors: list[str] = Field(default_factory=list)


class EndpointList(BaseModel):
    endpoints: list[EndpointInfo]


class Resources(Body):
    cores: int = Field(1, ge=1, le=100_000)
    gpus: int = Field(0, ge=0, le=1024)
    walltime_s: float | None = Field(None, gt=0, le=366 * 86400, allow_inf_nan=False)
    num_nodes: int | None = Field(None, ge=1, le=1_000_000)
    ranks_per_node: int | None = Field(None, ge=1, le=100_000)
    num_ranks: int | None = Field(None, ge=1, le=100_000_000)
    # an image reference (registry/name:tag, @digest, or an apptainer file's path):
    # never an engine option (it goes on the engine's command line)
    container_image: str | None = Field(None, max_length=512,
                                        pattern=r"^[A-Za-z0-9_./][A-Za-z0-9_./:@+-]*$")

    @model_validator(mode="after")
    def _mpi_agrees(self) -> Resources:
        """A contradictory MPI request is refused at submission, not on a node."""
        try:
            MPIRequest.from_resources(self)
        except CommandError as exc:
            raise ValueError(exc.message) from exc
        return self


class TaskIn(Body):
    task_id: TaskIdIn | None = None
    function_id: Id
    endpoint_id: Id
    # base64 text in JSON; the raw bytes on a result stream opened with
    # ``encoding=msgpack`` (docs/protocol.md)
    payload: str | bytes
    group_id: Name | None = Field(None, max_length=64)
    resources: Resources | None = None


class TasksIn(Body):
    tasks: list[TaskIn] = Field(min_length=1)


class TaskIds(Body):
    task_ids: list[Id] = Field(max_length=100_000)


class TaskIdsOut(BaseModel):
    task_ids: list[str]


class TaskError(BaseModel):
    code: str
    message: str
    remote_type: str = ""
    remote_traceback: str = ""
    exception: str = Field("", description="base64 of the pickled exception (serialize "
                                           "envelope), for the client to re-raise")


class TaskLogRecord(BaseModel):
    created: float
    level: int
    name: str
    message: str
    at: int = Field(0, description="characters of stdout written before this record")


class TaskRecord(BaseModel):
    task_id: str
    function_id: str
    endpoint_id: str
    group_id: str | None = None
    state: str
    seq: int
    timestamps: dict[str, float]
    result: str | None = Field(None, description="base64 of the result envelope")
    error: TaskError | None = None
    stdout: str = ""
    logs: list[TaskLogRecord] = []
    attempts: int = 0

    @field_validator("result", mode="before")
    @classmethod
    def _base64(cls, value: Any) -> Any:
        """``task_record`` hands the stored bytes over; the API carries base64."""
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(value).decode("ascii")
        return value


class TaskList(BaseModel):
    tasks: list[TaskRecord]


class TaskErrorBrief(BaseModel):
    code: str
    message: str


class TaskSummary(BaseModel):
    """A task as a listing shows it: no result, output or logs (``GET /v1/tasks/{id}``
    has them)."""

    task_id: str
    function_id: str
    endpoint_id: str
    group_id: str | None = None
    state: str
    timestamps: dict[str, float]
    attempts: int = 0
    error: TaskErrorBrief | None = None


class TaskPageOut(BaseModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(None, description=(
        "pass as ``cursor`` for the next page; absent on the last"))


class Cancelled(BaseModel):
    cancelled: list[str]


class TokenIn(Body):
    name: Name = Field(min_length=1, max_length=200)


class TokenCreated(BaseModel):
    token_id: str
    token: str


class TokenInfo(BaseModel):
    token_id: str
    name: str
    created_at: float
    revoked_at: float | None = None


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class Sharing(Body):
    """Whom a function or an endpoint is shared with, besides its owner."""

    public: bool = Field(False, description="everyone with an account may use it")
    users: list[Annotated[Name, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000,
        description="user names; globus:<username> for Globus identities")
    groups: list[Annotated[Name, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=1000, description="Globus group ids")


class Deleted(BaseModel):
    deleted: str


class Revoked(BaseModel):
    revoked: str


class Health(BaseModel):
    status: str
    version: str


class WhoAmI(BaseModel):
    user_id: str
    name: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail
