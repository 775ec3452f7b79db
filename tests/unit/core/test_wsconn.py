"""The client's WebSocket connection against real servers on loopback: websockets'
own threaded server, and a raw socket that answers the handshake and then goes
silent (a peer that died without closing)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.server import Server, ServerConnection, serve

from funcx_flows.wsconn import ConnectionClosed, InvalidStatus, WsConnection


@pytest.fixture
def echo() -> Iterator[tuple[str, list[str]]]:
    """A server that echoes each message, sends a fragmented one when asked, and
    records the Authorization header it saw."""
    seen: list[str] = []

    def handler(ws: ServerConnection) -> None:
        seen.append(ws.request.headers.get("Authorization", "") if ws.request else "")
        for msg in ws:
            if msg == b"fragments":
                ws.send([b"one-", b"two-", b"three"])
            elif msg == b"wait":
                time.sleep(0.6)  # longer than the client's ping interval
                ws.send(b"still here")
            else:
                ws.send(msg)

    def refuse(conn: ServerConnection, request: object) -> object:
        if conn.request is not None and conn.request.path.startswith("/forbidden"):
            return conn.respond(403, "no\n")
        return None

    server: Server = serve(handler, "127.0.0.1", 0, process_request=refuse, max_size=None,
                           compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.socket.getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}", seen
    finally:
        server.shutdown()
        thread.join(5)


def test_messages_both_ways_large_and_fragmented(echo: tuple[str, list[str]]) -> None:
    url, seen = echo
    ws = WsConnection.open(url + "/x", {"Authorization": "Bearer t"})
    try:
        ws.send(b"hello")
        assert ws.recv() == b"hello"
        big = bytes(range(256)) * (5 * 4096)  # 5 MiB: many socket reads
        ws.send(big)
        assert ws.recv() == big
        ws.send(b"fragments")
        assert ws.recv() == b"one-two-three"
    finally:
        ws.close()
    assert seen == ["Bearer t"]


def test_a_quiet_but_live_server_keeps_the_connection(echo: tuple[str, list[str]]) -> None:
    url, _ = echo
    ws = WsConnection.open(url, {}, ping_interval=0.2)
    try:
        ws.send(b"wait")  # the client pings meanwhile; the server answers
        assert ws.recv() == b"still here"
    finally:
        ws.close()


def test_http_refusal_is_invalid_status(echo: tuple[str, list[str]]) -> None:
    url, _ = echo
    with pytest.raises(InvalidStatus) as info:
        WsConnection.open(url + "/forbidden", {})
    assert info.value.response.status_code == 403


def test_close_wakes_a_blocked_reader(echo: tuple[str, list[str]]) -> None:
    url, _ = echo
    ws = WsConnection.open(url, {})
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            ws.recv()
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    ws.close()
    t.join(5)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosed)
    with pytest.raises((ConnectionClosed, OSError)):
        ws.send(b"after close")


def _silent_server() -> tuple[socket.socket, threading.Thread, list[socket.socket]]:
    """Answers one opening handshake correctly, then never sends another byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def run() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener, t, held


def test_a_silent_peer_ends_the_connection_after_an_unanswered_ping() -> None:
    listener, t, held = _silent_server()
    port = listener.getsockname()[1]
    try:
        ws = WsConnection.open(f"ws://127.0.0.1:{port}", {}, ping_interval=0.2)
        t.join(5)
        start = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv()
        waited = time.monotonic() - start
        assert 0.3 < waited < 5  # one interval to ping, one more without an answer
        ws.close()
    finally:
        for c in held:
            c.close()
        listener.close()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the certificate is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "funcx-flows test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_wss_verifies_the_server_certificate(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handler(ws: ServerConnection) -> None:
        for msg in ws:
            ws.send(msg)

    server = serve(handler, "127.0.0.1", 0, ssl=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"wss://127.0.0.1:{server.socket.getsockname()[1]}"
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            WsConnection.open(url, {})  # not a trusted certificate
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now trusted, as with a site CA
        ws = WsConnection.open(url, {})
        try:
            ws.send(b"over tls")
            assert ws.recv() == b"over tls"
        finally:
            ws.close()
    finally:
        server.shutdown()
        thread.join(5)
