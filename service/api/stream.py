"""WS /v1/results/stream: finished task records of the caller, as they complete.

Subscribe first, then replay what finished after ``after`` from the database,
then stream live records: nothing falls between the two (a record may come
twice; clients drop duplicates by task id).

The client may submit over the same socket (``{"op": "submit", "ref": n,
"tasks": [...]}``, the body of POST /v1/tasks): answered with ``submitted`` and
the task ids once they are durable, or ``error`` with the code and message a
REST call would carry. It saves an HTTP request per batch on the latency path.

Frames are JSON, or msgpack both ways when the stream is opened with
``encoding=msgpack``: payloads and results then travel as raw bytes, not base64
(a 10 MB argument is ~13 MB of text, encoded and decoded at each end).

A stream of a group opened with ``cancel_on_close=S`` ties the group's tasks to
its client: once it closes, if no stream of that group is open S seconds later
(the client did not reconnect: it was killed, or its host went away), the
group's unfinished tasks are cancelled. Best effort: a service restart forgets
the pending checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Annotated

import pydantic
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.exc import DBAPIError

from funcx_flows import streamwire as sw
from funcx_flows.errors import FuncxFlowsError, InvalidRequest, ProtocolError
from funcx_flows.service.api.deps import (
    CLOSE_POLICY,
    Parts,
    authenticate,
    bearer,
    parts,
    refuse,
)
from funcx_flows.service.api.fields import Name
from funcx_flows.service.api.models import TasksIn
from funcx_flows.service.api.records import task_record
from funcx_flows.service.api.tasks import accept_tasks
from funcx_flows.service.db import storage_unavailable
from funcx_flows.service.store import User, hash_token

GroupId: pydantic.TypeAdapter[str] = pydantic.TypeAdapter(
    Annotated[Name, pydantic.Field(max_length=64)])

log = logging.getLogger(__name__)
router = APIRouter(tags=["results"])
PAGE = 1000
MAX_CANCEL_ON_CLOSE_S = 7 * 24 * 3600.0
_orphan_checks: set[asyncio.Task[None]] = set()


@router.websocket("/results/stream")
async def results_stream(websocket: WebSocket, group_id: str | None = None,
                         after: str = "0", encoding: str = "json",
                         cancel_on_close: str = "0") -> None:
    p = parts(websocket)
    header = websocket.headers.get("authorization")
    try:
        after_seq = _sequence_number(after)
        if group_id is not None:
            group_id = _group_id(group_id)
        grace_s = _grace(cancel_on_close, group_id)
        if encoding not in sw.ENCODINGS:
            raise InvalidRequest(f"unknown encoding {encoding!r}; one of "
                                 f"{', '.join(sw.ENCODINGS)}", field="encoding")
        user = await asyncio.to_thread(authenticate, p, header)
    except FuncxFlowsError as exc:
        await refuse(websocket, exc)
        return
    await websocket.accept()
    sub = p.hub.subscribe(user.user_id, group_id, hash_token(bearer(header)))
    sender = _Sender(websocket, encoding)
    receiver = asyncio.create_task(_serve_client(websocket, p, sender))
    receiver.add_done_callback(lambda _: sub.close())  # the client went away
    try:
        while True:
            rows = await asyncio.to_thread(p.store.completed_after, user.user_id, after_seq,
                                           group_id, PAGE)
            if rows:
                after_seq = int(rows[-1]["seq"])
                await sender.send(sw.Results(results=[task_record(r) for r in rows]))
            if len(rows) < PAGE:
                break
        while (batch := await sub.take()) is not None:
            await sender.send(sw.Results(results=batch))
        if sub.reason:  # closed by the service: say why (the client sees the code)
            await websocket.close(code=CLOSE_POLICY, reason=sub.reason[:120])
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        p.hub.unsubscribe(sub)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        if grace_s and group_id:
            check = asyncio.create_task(_cancel_if_orphaned(p, user, group_id, grace_s))
            _orphan_checks.add(check)
            check.add_done_callback(_orphan_checks.discard)


async def _cancel_if_orphaned(p: Parts, user: User, group_id: str, grace_s: float) -> None:
    await asyncio.sleep(grace_s)
    if p.hub.streaming(user.user_id, group_id):
        return  # the client came back
    why = f"cancelled: its client's result stream closed {grace_s:g}s ago and did not return"
    try:
        rows = await asyncio.to_thread(p.store.cancel_group, user, group_id, why)
    except (FuncxFlowsError, DBAPIError) as exc:
        log.warning("could not cancel the tasks of group %s, whose client went away: %s",
                    group_id, exc)
        return
    p.dispatcher.cancel_threadsafe(rows)
    if rows:
        log.info("cancelled %d tasks of group %s: their client went away", len(rows), group_id)


MAX_SEQ = 2**63 - 1  # sequence numbers are 64-bit integers in both databases


def _sequence_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"after={text[:40]!r} is not an integer", field="after") from None
    if not 0 <= value <= MAX_SEQ:
        raise InvalidRequest(f"after must be between 0 and {MAX_SEQ}", field="after")
    return value


def _grace(text: str, group_id: str | None) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"cancel_on_close={text[:40]!r} is not a number of seconds",
                             field="cancel_on_close") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_CANCEL_ON_CLOSE_S):
        raise InvalidRequest(f"cancel_on_close must be between 0 and "
                             f"{MAX_CANCEL_ON_CLOSE_S:g} seconds", field="cancel_on_close")
    if value and group_id is None:
        raise InvalidRequest("cancel_on_close needs a group_id: it cancels that group's tasks",
                             field="cancel_on_close")
    return value


def _group_id(text: str) -> str:
    try:
        return GroupId.validate_python(text)
    except pydantic.ValidationError as exc:
        raise InvalidRequest(f"group_id {exc.errors()[0]['msg']}", field="group_id") from exc


class _Sender:
    """One writer at a time on the socket: results and submit answers interleave.
    Holds the stream's codec for both directions."""

    def __init__(self, websocket: WebSocket, encoding: str) -> None:
        self.websocket = websocket
        self.lock = asyncio.Lock()
        self.codec = sw.service_codec(encoding)

    async def send(self, frame: sw.Frame) -> None:
        data = self.codec.encode(frame)
        async with self.lock:
            await self.websocket.send_bytes(data)


async def _serve_client(websocket: WebSocket, p: Parts, sender: _Sender) -> None:
    """Answer the client's submit ops; returns when the client goes away."""
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return
        frame = msg.get("bytes") or (msg.get("text") or "").encode()
        await sender.send(await _submit_op(websocket, p, sender, frame))


async def _submit_op(websocket: WebSocket, p: Parts, sender: _Sender,
                     frame: bytes) -> sw.Submitted | sw.Error:
    ref: sw.Ref = None
    try:
        try:
            op = sender.codec.decode(frame)
        except ProtocolError as exc:
            raise InvalidRequest(f"the only frame a client may send is a submit "
                                 f"({{\"op\": \"submit\", \"ref\": ..., \"tasks\": [...]}}): "
                                 f"{exc.message}") from exc
        ref = op.ref
        # per op, like a REST call: a revoked token stops submitting at once, and
        # the per-user request rate applies
        user = authenticate(p, websocket.headers.get("authorization"))
        try:
            body = TasksIn.model_validate({"tasks": op.tasks})
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ()))
            raise InvalidRequest(f"invalid request: {where}: {first.get('msg')}") from exc
        return sw.Submitted(ref=ref, task_ids=await accept_tasks(p, user, body))
    except FuncxFlowsError as exc:
        return sw.Error(ref=ref, error=sw.ErrorBody(
            code=exc.code, message=exc.message,
            details={k: v for k, v in exc.details.items()
                     if isinstance(v, str | int | float | bool | None)}))
    except DBAPIError as exc:
        err = storage_unavailable(exc)
        return sw.Error(ref=ref, error=sw.ErrorBody(code=err.code, message=err.message,
                                                    details=err.details))
