"""The agent's WebSocket link, against sockets of the test's own: a link that went
down never blocks the agent, and says why it went down."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import zmq

from funcx_flows.endpoint.link import LinkDown, WsServiceLink, WsTarget


def _down(link: WsServiceLink, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if link.sock.poll(100):
            with pytest.raises(LinkDown) as down:
                while link.recv() is not None:
                    pass
            return str(down.value)
    raise AssertionError("the link never reported going down")


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_sending_on_a_link_that_went_down_never_blocks(ctx):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = WsServiceLink(ctx, WsTarget(f"ws://127.0.0.1:{port}/v1/endpoints/x/link", "t"))
    try:
        assert "cannot connect" in _down(link)
        sent = threading.Event()

        def send_many() -> None:
            for _ in range(10_000):  # heartbeats and results, as the agent would
                link.send(b"x" * 100)
            sent.set()

        threading.Thread(target=send_many, daemon=True).start()
        assert sent.wait(10), "the agent's send blocked on a link that is down"
    finally:
        link.close()


def test_a_refused_handshake_names_the_status(ctx):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer_401() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 16\r\nConnection: close\r\n\r\n{\"error\": \"no\"}\n")
        conn.close()

    threading.Thread(target=answer_401, daemon=True).start()
    port = listener.getsockname()[1]
    link = WsServiceLink(ctx, WsTarget(f"ws://127.0.0.1:{port}/v1/endpoints/x/link", "bad"))
    try:
        assert "refused the link (HTTP 401)" in _down(link)
    finally:
        link.close()
        listener.close()
