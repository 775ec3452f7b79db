"""A blocking WebSocket client connection: one socket and websockets' sans-I/O protocol.

websockets' own threaded client reads the socket in a thread of its own and hands
each message to the reader through an assembler (another thread hop and two
condition variables per message), and keeps a third thread for keepalive pings.
Here the one thread that calls ``recv`` reads the socket itself; ``send`` may be
called from any thread. Keepalive: after ``ping_interval`` seconds without a byte
from the server, a ping goes out; another ``ping_interval`` of silence ends the
connection (``recv`` raises ``ConnectionClosed``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from funcx_flows import tls

__all__ = ["ConnectionClosed", "InvalidStatus", "WsConnection"]

READ_CHUNK = 1 << 18


class WsConnection:
    def __init__(self, sock: socket.socket, protocol: ClientProtocol,
                 ping_interval: float) -> None:
        self._sock = sock
        self._protocol = protocol
        self._lock = threading.Lock()  # the protocol object is not thread-safe
        self._ping_interval = ping_interval
        self._parts: list[bytes] = []  # a fragmented message, until its last frame
        self._pending: list[Frame] = []  # frames read but not yet returned

    @classmethod
    def open(cls, url: str, headers: Mapping[str, str], *, timeout: float = 10.0,
             ping_interval: float = 20.0, ca_bundle: str | None = None) -> WsConnection:
        """Connect and finish the opening handshake; raises OSError, TimeoutError,
        InvalidStatus (the server answered with an HTTP error) or InvalidHandshake.
        ``ca_bundle``: a CA file to trust for wss:// besides the system's (default
        ``tls.ca_bundle()``)."""
        uri = parse_uri(url)
        sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                sock = tls.client_context(ca_bundle).wrap_socket(sock,
                                                                 server_hostname=uri.host)
            protocol = ClientProtocol(uri, max_size=None)
            request = protocol.connect()
            for name, value in headers.items():
                request.headers[name] = value
            protocol.send_request(request)
            sock.sendall(b"".join(protocol.data_to_send()))
            while True:
                data = sock.recv(READ_CHUNK)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                events = protocol.events_received()
                if protocol.handshake_exc is not None:
                    raise protocol.handshake_exc
                if any(isinstance(e, Response) for e in events):
                    break
                if not data:
                    raise InvalidHandshake("the server closed the connection during the handshake")
            conn = cls(sock, protocol, ping_interval)
            # frames that came with the handshake response
            conn._pending = [e for e in events if isinstance(e, Frame)]
            sock.settimeout(ping_interval)
            return conn
        except BaseException:
            sock.close()
            raise

    def send(self, message: bytes) -> None:
        """Send one binary message (from any thread); raises ConnectionClosed or OSError."""
        with self._lock:
            if self._protocol.state is not State.OPEN:
                raise ConnectionClosed(None, None)
            self._protocol.send_binary(message)
            out = self._protocol.data_to_send()
            self._sock.sendall(b"".join(out))

    def recv(self) -> bytes:
        """The next message (one reader thread only); raises ConnectionClosed when
        the connection ends, however it ends."""
        while True:
            while self._pending:
                message = self._take(self._pending.pop(0))
                if message is not None:
                    return message
            self._pending = self._read()

    def _take(self, frame: Frame) -> bytes | None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            if frame.fin and not self._parts:
                return bytes(frame.data)
            self._parts.append(bytes(frame.data))
            if frame.fin:
                message, self._parts = b"".join(self._parts), []
                return message
        return None  # ping (answered by the protocol), pong, close

    def _read(self) -> list[Frame]:
        pinged = False
        while True:
            try:
                data = self._sock.recv(READ_CHUNK)
            except TimeoutError:
                if pinged:
                    self._fail("no answer to a keepalive ping")
                with self._lock:
                    self._protocol.send_ping(b"")
                    self._sock.sendall(b"".join(self._protocol.data_to_send()))
                pinged = True
                continue
            except OSError as exc:
                self._fail(f"the socket failed: {exc}")
            with self._lock:
                if data:
                    self._protocol.receive_data(data)
                else:
                    self._protocol.receive_eof()
                events = self._protocol.events_received()
                out = self._protocol.data_to_send()  # pongs, the close handshake
                if out:
                    with contextlib.suppress(OSError):  # reading tells what became of it
                        self._sock.sendall(b"".join(out))
            frames = [e for e in events if isinstance(e, Frame)]
            if frames:
                return frames
            if self._protocol.state is State.CLOSED or not data:
                self._fail(self._why_closed(bool(data)))

    def _why_closed(self, data: bool) -> str:
        rcvd = self._protocol.close_rcvd
        if rcvd is not None:
            return f"the server closed the connection ({rcvd})"
        if not data:
            return "the connection ended without a closing handshake (EOF)"
        return "the connection was closed"

    def _fail(self, why: str) -> None:
        self._sock.close()
        raise ConnectionClosed(None, None) from OSError(why)

    def close(self) -> None:
        """Say goodbye and close the socket; a thread blocked in ``recv`` returns
        (with ConnectionClosed)."""
        with self._lock:
            if self._protocol.state is State.OPEN:
                self._protocol.send_close()
                with contextlib.suppress(OSError):
                    self._sock.sendall(b"".join(self._protocol.data_to_send()))
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
