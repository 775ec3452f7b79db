"""Endpoint links over ZeroMQ: a CurveZMQ ROUTER that endpoints dial.

For sites that can open a port to the service. ZAP admits only the public keys of
registered endpoints; each inbound frame is checked against the key of the
endpoint it claims to come from (ZAP sets the frame's ``User-Id`` to the client's
key), decoded, and handed to the dispatcher in batches (everything waiting, up to
``MAX_MESSAGES_PER_TURN``). Endpoints behind firewalls that allow only HTTPS use
the WebSocket link instead (``service/api/link.py``); both feed the same
dispatcher.

    endpoint DEALER --CURVE--> ROUTER --decode, check key--> Dispatcher.receive
    endpoint DEALER <--------- ROUTER <--ZmqChannel.send---- Dispatcher._send
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from funcx_flows import messages as m
from funcx_flows.errors import ConfigError, ProtocolError
from funcx_flows.home import write_secret

if TYPE_CHECKING:
    from funcx_flows.service.dispatcher import Dispatcher
    from funcx_flows.service.settings import ServiceSettings

log = logging.getLogger(__name__)
MAX_MESSAGES_PER_TURN = 2000


@dataclass
class ServiceKeys:
    public: str
    secret: str

    @classmethod
    def load_or_create(cls, folder: Path) -> ServiceKeys:
        path = folder / "curve.json"
        try:
            data = json.loads(path.read_text())
            return cls(data["public"], data["secret"])
        except (OSError, ValueError, KeyError):
            public, secret = zmq.curve_keypair()
            keys = cls(public.decode(), secret.decode())
            write_secret(path, json.dumps({"public": keys.public, "secret": keys.secret}))
            return keys


class ZmqChannel:
    """The way to one endpoint through the ROUTER."""

    def __init__(self, sock: zmq.asyncio.Socket, endpoint_id: str) -> None:
        self._sock = sock
        self._rid = endpoint_id.encode()
        self.endpoint_id = endpoint_id

    def send(self, frame: bytes) -> None:
        try:
            self._sock.send_multipart([self._rid, frame], copy=False)
        except zmq.ZMQError as exc:
            log.warning("could not send to endpoint %s: %s", self.endpoint_id, exc)

    def close(self) -> None:
        """Nothing to close: the ROUTER serves every endpoint."""


class ZmqLinks:
    """The ROUTER, its ZAP handler and its receive loop."""

    def __init__(self, settings: ServiceSettings, keys: ServiceKeys,
                 dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.keys = keys
        self.dispatcher = dispatcher
        self.url = ""
        self._endpoint_keys: dict[str, str] = {}
        self._known_keys: set[str] = set()
        self._channels: dict[str, ZmqChannel] = {}
        self._ctx = zmq.asyncio.Context()
        self._auth: AsyncioAuthenticator | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._decoder = m.Decoder(m.AGENT_TO_SERVICE)

    # ---------------------------------------------------------------- keys --

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: only public keys of registered endpoints may connect."""
        return key.decode("ascii", "replace") in self._known_keys

    def set_endpoint_key(self, endpoint_id: str, public_key: str) -> None:
        old = self._endpoint_keys.get(endpoint_id)
        if old is not None:
            self._known_keys.discard(old)
        self._endpoint_keys[endpoint_id] = public_key
        self._known_keys.add(public_key)

    def forget_endpoint(self, endpoint_id: str) -> None:
        key = self._endpoint_keys.pop(endpoint_id, None)
        if key is not None:
            self._known_keys.discard(key)
        self._channels.pop(endpoint_id, None)

    # ---------------------------------------------------------- life cycle --

    async def start(self) -> str:
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_secretkey = self.keys.secret.encode()
        sock.curve_publickey = self.keys.public.encode()
        sock.router_handover = True
        sock.linger = 0
        sock.sndhwm = 0
        sock.rcvhwm = 0
        s = self.settings
        try:
            if s.zmq_port:
                sock.bind(f"tcp://{s.zmq_host}:{s.zmq_port}")
                port = s.zmq_port
            else:
                port = sock.bind_to_random_port(f"tcp://{s.zmq_host}")
        except zmq.ZMQError as exc:
            sock.close()
            self._auth.stop()
            hint = (" (another service, or an old one still stopping? choose another "
                    "with --zmq-port or FUNCX_FLOWS_ZMQ_PORT)"
                    if exc.errno == errno.EADDRINUSE else "")
            raise ConfigError(
                f"cannot listen for endpoints on tcp://{s.zmq_host}:{s.zmq_port}: "
                f"{os.strerror(exc.errno or 0)}{hint}",
                setting="zmq_port") from exc
        self._sock = sock
        self.url = s.zmq_public_url or f"tcp://{s.zmq_host}:{port}"
        log.info("ZeroMQ ROUTER bound on tcp://%s:%d; endpoints dial %s", s.zmq_host, port,
                 self.url)
        self._task = asyncio.create_task(self._receive_loop(), name="zmq-links-recv")
        return self.url

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def close(self) -> None:
        """After the dispatcher's last words went out."""
        if self._sock is not None:
            self._sock.close(linger=200)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    # ------------------------------------------------------------ receiving --

    async def _receive_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            batch = [await sock.recv_multipart(copy=False)]
            while len(batch) < MAX_MESSAGES_PER_TURN:
                try:
                    batch.append(await sock.recv_multipart(zmq.NOBLOCK, copy=False))
                except zmq.Again:
                    break
            decoded: list[tuple[ZmqChannel, m.Message]] = []
            for frames in batch:
                try:
                    decoded.append(self._decode(sock, frames))
                except ProtocolError as exc:
                    log.warning("dropped a bad message: %s", exc)
                except Exception:  # never let one frame end the receive loop
                    log.exception("could not decode a frame; dropped it")
            await self.dispatcher.receive(decoded)

    def _decode(self, sock: zmq.asyncio.Socket, frames: list[zmq.Frame]
                ) -> tuple[ZmqChannel, m.Message]:
        if len(frames) != 2:
            raise ProtocolError(f"expected 2 frames, got {len(frames)}")
        endpoint_id = frames[0].bytes.decode("ascii", "replace")
        frame = frames[1]
        if frame.get("User-Id") != self._endpoint_keys.get(endpoint_id):
            raise ProtocolError(f"a peer claimed endpoint id {endpoint_id!r} with another key")
        channel = self._channels.get(endpoint_id)
        if channel is None:
            channel = self._channels[endpoint_id] = ZmqChannel(sock, endpoint_id)
        return channel, self._decoder.decode(frame.buffer)
