"""Typed, versioned frames of a client's result stream (WS /v1/results/stream).

The same shape as the endpoint hops (``messages.py``): msgspec structs tagged by
``op`` and carrying the stream protocol's version ``v``. Frames are JSON, or
msgpack when the stream is opened with ``encoding=msgpack`` (payloads and results
then travel as raw bytes). Task bodies and task records stay dicts: they are the
REST API's own bodies (``POST /v1/tasks``) and records, validated and built there.

    client  --Submit------------------>  service
    client  <--Results | Submitted | Error--  service

Compatibility as on the other hops: a frame without ``v`` is version 1, fields
added later have defaults, and unknown fields are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, Union

import msgspec

from funcx_flows.errors import ProtocolError

STREAM_VERSION = 1
ENCODINGS = ("json", "msgpack")

Ref = int | str | None  # the client's tag for a submit; echoed in the answer


class Frame(msgspec.Struct, kw_only=True, tag_field="op", omit_defaults=True):
    v: int = STREAM_VERSION


class Submit(Frame, tag="submit", kw_only=True):
    """A batch of tasks: ``tasks`` is the body of POST /v1/tasks."""

    ref: Ref = None
    tasks: list[dict[str, Any]]


class Results(Frame, tag="results", kw_only=True):
    """Finished task records (the REST API's task records)."""

    results: list[dict[str, Any]]


class Submitted(Frame, tag="submitted", kw_only=True):
    """The submit tagged ``ref`` is durable: its task ids."""

    ref: Ref = None
    task_ids: list[str]


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str  # a code of funcx_flows.errors
    message: str
    details: dict[str, Any] = {}


class Error(Frame, tag="error", kw_only=True):
    """The submit tagged ``ref`` (None: a frame that could not be read) was refused,
    with the code and message a REST call would carry."""

    ref: Ref = None
    error: ErrorBody


CLIENT_TO_SERVICE = Submit
SERVICE_TO_CLIENT = Union[Results, Submitted, Error]  # noqa: UP007 (a runtime type)

F = TypeVar("F")


class Codec(Generic[F]):
    """Encodes any frame; decodes the frames one direction may carry, raising
    ProtocolError for anything else (a bad frame never reaches the caller)."""

    def __init__(self, encoding: str, incoming: Any) -> None:
        if encoding == "msgpack":
            self._encode: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
            self._decoder: Any = msgspec.msgpack.Decoder(incoming)
        elif encoding == "json":
            self._encode = msgspec.json.Encoder().encode
            self._decoder = msgspec.json.Decoder(incoming)
        else:
            raise ValueError(f"unknown stream encoding {encoding!r}")
        self.encoding = encoding

    def encode(self, frame: Frame) -> bytes:
        return self._encode(frame)

    def decode(self, data: bytes) -> F:
        try:
            frame: Any = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"not a {self.encoding} frame this side reads: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"a stream frame that is not {self.encoding}: {exc}") from exc
        if frame.v != STREAM_VERSION:
            raise ProtocolError(f"unsupported stream version {frame.v} "
                                f"(this side speaks {STREAM_VERSION})")
        result: F = frame
        return result


def client_codec(encoding: str) -> Codec[Results | Submitted | Error]:
    return Codec(encoding, SERVICE_TO_CLIENT)


def service_codec(encoding: str) -> Codec[Submit]:
    return Codec(encoding, CLIENT_TO_SERVICE)
