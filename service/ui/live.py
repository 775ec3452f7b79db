"""GET /ui/events: server-sent events that keep open pages current.

A viewer is one more subscription on the hub that already fans finished task
records out to result streams: the dispatcher publishes each batch of results
once, and the hub hands it to every open stream and page of its owner. So a
viewer costs one query when it connects (the endpoints it may see) and none
after, on any tick: with replicas, the one shared reader of finished rows per
replica feeds them all. Endpoint status comes from one reading of the links per
period for all viewers (ticker.py), filtered to what each viewer may see. A
page's script updates what it shows from the events (a task's state in a table,
an endpoint's state and workers; the task page re-reads itself when its task
ends).

Events name the task, its state, endpoint and function only: results and
tracebacks stay behind the pages, which check who may see them. A session
made from a token that is revoked is closed by the service's revocation check,
as a result stream is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from funcx_flows.errors import AuthenticationError
from funcx_flows.service.api.deps import parts
from funcx_flows.service.hub import Hub, Subscription
from funcx_flows.service.ui.session import COOKIE
from funcx_flows.service.ui.state import ui_state
from funcx_flows.service.ui.ticker import StatusTicker

router = APIRouter(include_in_schema=False)
KEEPALIVE_S = 15.0  # a comment line now and then: proxies close idle connections
SHOWN = ("task_id", "state", "endpoint_id", "function_id")


@router.get("/ui/events")
async def events(request: Request) -> Response:
    state = ui_state(request)
    p = parts(request)
    try:
        session = state.sessions.decode(request.cookies.get(COOKIE))
        user = await asyncio.to_thread(state.sessions.user, session)
    except AuthenticationError as exc:
        return Response(exc.message, status_code=401, media_type="text/plain")
    visible = await asyncio.to_thread(
        lambda: {str(r["endpoint_id"]) for r in p.store.list_endpoints(user, True)})
    digest = session.subject if session.kind == "token" else ""
    sub = p.hub.subscribe(user.user_id, None, digest)
    return StreamingResponse(_stream(p.hub, sub, state.ticker, visible),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def _stream(hub: Hub, sub: Subscription, ticker: StatusTicker, visible: set[str]
                  ) -> AsyncIterator[str]:
    """Task events as the hub hands them over; endpoint status when the shared
    ticker saw a change in what this viewer may see; a keepalive otherwise."""
    ticker.join()
    take: asyncio.Future[list[dict[str, Any]] | None] = asyncio.ensure_future(sub.take())
    changed: asyncio.Future[bool] | None = None
    try:
        yield "retry: 2000\n\n"
        status = {k: v for k, v in ticker.snapshot.items() if k in visible}
        yield _event("endpoints", status)
        while True:
            changed = asyncio.ensure_future(ticker.changed.wait())
            done, _ = await asyncio.wait({take, changed}, timeout=KEEPALIVE_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                yield ": keepalive\n\n"
            if changed in done:
                now = {k: v for k, v in ticker.snapshot.items() if k in visible}
                if now != status:
                    status = now
                    yield _event("endpoints", status)
            else:
                changed.cancel()
            if take in done:
                batch = take.result()
                if batch is None:  # closed by the service (a revoked token)
                    yield _event("closed", sub.reason)
                    return
                yield _event("tasks", [{k: r.get(k) for k in SHOWN} for r in batch])
                take = asyncio.ensure_future(sub.take())
    finally:
        take.cancel()
        if changed is not None:
            changed.cancel()
        ticker.leave()
        hub.unsubscribe(sub)
