"""WS /v1/results/stream: finished task records of the caller, as they complete.

Subscribe first, then replay what finished after ``after`` from the database,
then stream live records: nothing falls between the two (a record may come
twice; clients drop duplicates by task id).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from funcx_flows.errors import FuncxFlowsError
from funcx_flows.service.api.deps import authenticate, parts
from funcx_flows.service.store import task_record

router = APIRouter(tags=["results"])
_json = msgspec.json.Encoder()
PAGE = 1000


@router.websocket("/results/stream")
async def results_stream(websocket: WebSocket, group_id: str | None = None,
                         after: int = 0) -> None:
    p = parts(websocket)
    try:
        user = await asyncio.to_thread(authenticate, p, websocket.headers.get("authorization"))
    except FuncxFlowsError:
        await websocket.close(code=1008)  # before accept: the handshake answers 403
        return
    await websocket.accept()
    sub = p.hub.subscribe(user.user_id, group_id)
    receiver = asyncio.create_task(_drain_client(websocket))
    try:
        while True:
            rows = await asyncio.to_thread(p.store.completed_after, user.user_id, after,
                                           group_id, PAGE)
            if rows:
                after = int(rows[-1]["seq"])
                await _send(websocket, [task_record(r) for r in rows])
            if len(rows) < PAGE:
                break
        while True:
            getter = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                return
            batch = getter.result()
            while not sub.queue.empty():
                batch.extend(sub.queue.get_nowait())
            await _send(websocket, batch)
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        p.hub.unsubscribe(sub)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver


async def _send(websocket: WebSocket, records: list[dict[str, Any]]) -> None:
    await websocket.send_bytes(_json.encode({"op": "results", "results": records}))


async def _drain_client(websocket: WebSocket) -> None:
    """Returns when the client goes away (it sends nothing we need)."""
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return
