"""WS /v1/endpoints/{id}/link: an endpoint's link on the HTTPS origin.

For endpoints at sites that let only HTTPS out (port 443 through a proxy or a
firewall): the same typed messages as the CurveZMQ link (``messages.py``, msgpack,
one message per binary frame), the same dispatcher, spool, resends and
acknowledgements. The endpoint proves who it is with its link token (issued at
registration; it opens nothing else), over TLS that the proxy or the service
terminates.

    agent --wss--> proxy --ws--> reader task --> Dispatcher.receive([(channel, msg), ...])
    agent <-------------------- WsChannel.send (one writer task per link)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from funcx_flows import messages as m
from funcx_flows.errors import AuthenticationError, FuncxFlowsError, ProtocolError
from funcx_flows.service.api.deps import bearer, parts, refuse
from funcx_flows.service.api.fields import canonical_id

router = APIRouter(tags=["endpoints"])
log = logging.getLogger(__name__)

MAX_PENDING = 1000  # messages read from a link and not yet handled


class WsChannel:
    """The dispatcher's way to one endpoint over its WebSocket: frames go out in the
    order sent, written by one task (the socket takes one writer at a time)."""

    def __init__(self, websocket: WebSocket, endpoint_id: str) -> None:
        self.websocket = websocket
        self.endpoint_id = endpoint_id
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name=f"link-writer-{endpoint_id}")

    def send(self, frame: bytes) -> None:
        self._queue.put_nowait(frame)

    def close(self) -> None:
        """After what was sent so far, the connection ends."""
        self._queue.put_nowait(None)

    async def _write(self) -> None:
        try:
            while (frame := await self._queue.get()) is not None:
                await self.websocket.send_bytes(frame)
            await self.websocket.close()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # gone: the reader sees it too

    async def finished(self) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer, 5)


@router.websocket("/endpoints/{endpoint_id}/link")
async def endpoint_link(websocket: WebSocket, endpoint_id: str) -> None:
    p = parts(websocket)
    eid = canonical_id(endpoint_id)
    try:
        token = bearer(websocket.headers.get("authorization"))
        if not await asyncio.to_thread(p.store.link_token_valid, eid, token):
            raise AuthenticationError(
                f"not the link token of endpoint {eid} (it changes at each registration: "
                "start the endpoint again)")
    except FuncxFlowsError as exc:
        await refuse(websocket, exc)
        return
    await websocket.accept()
    channel = WsChannel(websocket, eid)
    inbox: asyncio.Queue[tuple[WsChannel, m.Message] | None] = asyncio.Queue(MAX_PENDING)
    reader = asyncio.create_task(_read(websocket, channel, inbox), name=f"link-reader-{eid}")
    try:
        # What arrived while the last batch was being handled goes to the dispatcher
        # at once, as the ZeroMQ link's drained socket does: a burst of Results
        # frames is merged into one transaction, not one per frame.
        while (batch := await _take(inbox)) is not None:
            await p.dispatcher.receive(batch)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        p.dispatcher.detach(channel)
        await channel.finished()


async def _take(inbox: asyncio.Queue[tuple[WsChannel, m.Message] | None],
                ) -> list[tuple[WsChannel, m.Message]] | None:
    """All that is waiting (at least one message); None once the link ended and
    all that came before was taken."""
    first = await inbox.get()
    if first is None:
        return None
    batch = [first]
    while not inbox.empty():
        item = inbox.get_nowait()
        if item is None:  # the end: what came before it first
            inbox.put_nowait(None)
            break
        batch.append(item)
    return batch


async def _read(websocket: WebSocket, channel: WsChannel,
                inbox: asyncio.Queue[tuple[WsChannel, m.Message] | None]) -> None:
    """Read the link until it ends, then put None. While MAX_PENDING messages wait,
    this waits too, and the WebSocket's flow control holds the endpoint back."""
    decoder = m.Decoder(m.AGENT_TO_SERVICE)
    eid = channel.endpoint_id
    try:
        while True:
            event = await websocket.receive()
            if event["type"] == "websocket.disconnect":
                log.info("endpoint %s closed its link (code %s)", eid, event.get("code"))
                break
            frame = event.get("bytes")
            if frame is None:
                log.warning("endpoint %s sent a text frame on its link; dropped", eid)
                continue
            try:
                msg = decoder.decode(frame)
            except ProtocolError as exc:
                log.warning("dropped a bad message from endpoint %s: %s", eid, exc)
                continue
            await inbox.put((channel, msg))
    except WebSocketDisconnect as exc:
        log.info("endpoint %s's link dropped (code %s)", eid, exc.code)
    except RuntimeError as exc:  # Starlette: the socket is no longer usable
        log.info("endpoint %s's link ended: %s", eid, exc)
    except Exception:
        log.exception("endpoint %s's link: reading failed", eid)
    await inbox.put(None)  # not when cancelled: then nobody takes any more
