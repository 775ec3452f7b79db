"""GET /ui/events: server-sent events that keep open pages current.

A viewer is one more subscription on the hub that already fans finished task
records out to result streams: the dispatcher publishes each batch of results
once, and the hub hands it to every open stream and page of its owner. So a
viewer costs no query of its own, on any tick: with replicas, the one shared
reader of finished rows per replica feeds them all. A page's script updates
what it shows from the events (a task's state in a table; the task page
re-reads itself when its task ends).

Events name the task, its state, endpoint and function only: results and
tracebacks stay behind the pages, which check who may see them. A session
made from a token that is revoked is closed by the service's revocation check,
as a result stream is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from funcx_flows.errors import AuthenticationError
from funcx_flows.service.api.deps import parts
from funcx_flows.service.hub import Subscription
from funcx_flows.service.ui.session import COOKIE
from funcx_flows.service.ui.state import ui_state

router = APIRouter(include_in_schema=False)
KEEPALIVE_S = 15.0  # a comment line now and then: proxies close idle connections
SHOWN = ("task_id", "state", "endpoint_id", "function_id")


@router.get("/ui/events")
async def events(request: Request) -> Response:
    state = ui_state(request)
    try:
        session = state.sessions.decode(request.cookies.get(COOKIE))
        user = await asyncio.to_thread(state.sessions.user, session)
    except AuthenticationError as exc:
        return Response(exc.message, status_code=401, media_type="text/plain")
    hub = parts(request).hub
    digest = session.subject if session.kind == "token" else ""
    sub = hub.subscribe(user.user_id, None, digest)
    return StreamingResponse(_stream(hub, sub), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(hub: Any, sub: Subscription) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n\n"
        while True:
            try:
                batch = await asyncio.wait_for(sub.take(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if batch is None:  # closed by the service (a revoked token)
                yield f"event: closed\ndata: {json.dumps(sub.reason)}\n\n"
                return
            shown = [{k: r.get(k) for k in SHOWN} for r in batch]
            yield f"event: tasks\ndata: {json.dumps(shown)}\n\n"
    finally:
        hub.unsubscribe(sub)
