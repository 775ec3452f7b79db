"""The agent's link to the service, over ZeroMQ or over a WebSocket on the HTTPS port.

The agent's loop polls one ZeroMQ socket per link and moves whole encoded
messages (``messages.py``) through it; what carries them is this module's
business:

- ``ZmqServiceLink``: a CurveZMQ DEALER dialing the service's ROUTER (sites that
  can open a port to the service);
- ``WsServiceLink``: a WebSocket to ``/v1/endpoints/{id}/link`` on the service's
  HTTPS origin, through whatever proxy lets HTTPS out, authenticated by the
  endpoint's link token. Two threads carry it, so that a slow or stalled network
  never blocks the loop (a ZeroMQ socket never does either):

      agent loop --queue--------> writer thread --ws.send--> service
      agent loop <--PULL inproc-- reader thread <--ws.recv-- service
                 <-- b"down" ----  (either thread, when the connection ends)

The agent's sends never block (a queue; a ZeroMQ PUSH with no peer would block
until one connects: the agent froze when its writer had ended).

A link never reconnects by itself: when it goes down (``LinkDown``), the agent
closes it and, after its backoff, opens a new one and says Hello again, exactly as
with ZeroMQ. Frames the agent sent while a WebSocket was still connecting leave
once it is up.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import zmq
from websockets.exceptions import InvalidStatus, WebSocketException

from funcx_flows import tls
from funcx_flows.wsconn import WsConnection

log = logging.getLogger(__name__)
_DOWN = b"down"
_FRAME = b"frame"
_ids = itertools.count()


class LinkDown(Exception):
    """The link ended; ``str()`` says why."""


class ServiceLink(Protocol):
    sock: zmq.Socket[bytes]  # what the agent polls for incoming frames

    def send(self, frame: bytes) -> None: ...

    def recv(self) -> bytes | None:
        """The next frame, None when none is waiting; LinkDown when the link ended."""

    def close(self, linger: int = 0) -> None: ...


@dataclass(frozen=True)
class ZmqTarget:
    url: str
    endpoint_id: str
    public_key: str
    secret_key: str
    service_public_key: str


class ZmqServiceLink:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], target: ZmqTarget) -> None:
        s = ctx.socket(zmq.DEALER)
        s.curve_publickey = target.public_key.encode()
        s.curve_secretkey = target.secret_key.encode()
        s.curve_serverkey = target.service_public_key.encode()
        s.routing_id = target.endpoint_id.encode()
        s.linger = 0
        s.sndhwm = 0
        s.rcvhwm = 0
        s.connect(target.url)
        self.sock = s

    def send(self, frame: bytes) -> None:
        self.sock.send(frame, copy=False)

    def recv(self) -> bytes | None:
        try:
            return self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def close(self, linger: int = 0) -> None:
        self.sock.close(linger=linger)


@dataclass(frozen=True)
class WsTarget:
    url: str  # wss://host/v1/endpoints/{id}/link
    token: str
    connect_timeout_s: float = 10.0
    ping_interval_s: float = 20.0


def link_url(service_url: str, endpoint_id: str) -> str:
    base = service_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return f"{base}/v1/endpoints/{endpoint_id}/link"


class WsServiceLink:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], target: WsTarget) -> None:
        self.target = target
        down = f"inproc://ws-link-down-{next(_ids)}"
        self._up: queue.SimpleQueue[bytes] = queue.SimpleQueue()  # agent -> writer
        self.sock = ctx.socket(zmq.PULL)  # reader/writer -> agent
        self.sock.linger = 0
        self.sock.rcvhwm = 0
        self.sock.bind(down)
        self._stop = threading.Event()
        self._ws: WsConnection | None = None
        self._lock = threading.Lock()
        self._writer = threading.Thread(target=self._write, args=(ctx, down),
                                        name="ws-link-writer", daemon=True)
        self._reader: threading.Thread | None = None
        self._writer.start()

    # ------------------------------------------------------------ agent side --

    def send(self, frame: bytes) -> None:
        self._up.put(frame)

    def recv(self) -> bytes | None:
        try:
            kind, data = self.sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        if kind == _DOWN:
            raise LinkDown(data.decode(errors="replace"))
        return data

    def close(self, linger: int = 0) -> None:
        """End both threads; frames not yet written are dropped (the spool keeps
        results; the service re-sends tasks after the next Hello)."""
        self._stop.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            ws.close()  # wakes the reader, and the writer's send
        self._writer.join(2)
        if self._reader is not None:
            self._reader.join(2)
        self.sock.close(linger=0)

    # --------------------------------------------------------------- threads --

    def _write(self, ctx: zmq.Context[zmq.Socket[bytes]], down: str) -> None:
        """Connect, start the reader, then write what the agent sends until the end."""
        report = ctx.socket(zmq.PUSH)
        report.linger = 0
        report.connect(down)
        try:
            ws = self._open()
            if ws is None:
                return
            with self._lock:
                self._ws = ws
            self._reader = threading.Thread(target=self._read, args=(ctx, down, ws),
                                            name="ws-link-reader", daemon=True)
            self._reader.start()
            while not self._stop.is_set():
                try:
                    frame = self._up.get(timeout=0.2)
                except queue.Empty:
                    continue
                ws.send(frame)
        except LinkDown as exc:
            self._down(report, str(exc))
        except (OSError, WebSocketException) as exc:
            self._down(report, f"the WebSocket failed: {exc}")
        finally:
            report.close(linger=0)

    def _open(self) -> WsConnection | None:
        t = self.target
        headers: Mapping[str, str] = {"Authorization": f"Bearer {t.token}"}
        try:
            return WsConnection.open(t.url, headers, timeout=t.connect_timeout_s,
                                     ping_interval=t.ping_interval_s)
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode(errors="replace")[:300] if exc.response.body else ""
            raise LinkDown(f"the service refused the link (HTTP {status}) {body}".strip()
                           ) from exc
        except (OSError, WebSocketException, TimeoutError) as exc:
            if self._stop.is_set():
                return None
            raise LinkDown(tls.describe(exc, t.url) or f"cannot connect to {t.url}: {exc}"
                           ) from exc

    def _read(self, ctx: zmq.Context[zmq.Socket[bytes]], down: str, ws: WsConnection) -> None:
        push = ctx.socket(zmq.PUSH)
        push.linger = 0
        push.sndhwm = 0
        push.connect(down)
        try:
            while True:
                # NOBLOCK: once the agent closed its end, nobody is there to block for
                push.send_multipart([_FRAME, ws.recv()], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return  # the agent closed the link
        except (OSError, WebSocketException) as exc:
            if not self._stop.is_set():
                self._down(push, f"the WebSocket ended: {exc.__cause__ or exc}")
        finally:
            push.close(linger=200)

    def _down(self, sock: zmq.Socket[bytes], why: str) -> None:
        if self._stop.is_set():
            return
        with contextlib.suppress(zmq.ZMQError):
            sock.send_multipart([_DOWN, why.encode()], flags=zmq.NOBLOCK)
