"""Test helpers: a service's CurveZMQ ROUTER socket, and an agent's registration
with it, for tests that play the service against a real endpoint agent."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import zmq

from funcx_flows.endpoint.agent import Agent
from funcx_flows.endpoint.registration import Registration
from funcx_flows.endpoint.strategy import Actions


def curve_service(ctx: zmq.Context) -> tuple[zmq.Socket, Registration]:
    """A bound ROUTER socket that speaks CurveZMQ as the service does, and a
    registration (fresh endpoint id and keys) that dials it."""
    server_public, server_secret = zmq.curve_keypair()
    public, secret = zmq.curve_keypair()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.curve_server = True
    sock.curve_publickey = server_public
    sock.curve_secretkey = server_secret
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, Registration(
        endpoint_id=str(uuid.uuid4()), zmq_url=f"tcp://127.0.0.1:{port}",
        service_public_key=server_public.decode(), public_key=public.decode(),
        secret_key=secret.decode())


@contextlib.contextmanager
def running(agent: Agent, sock: zmq.Socket, ctx: zmq.Context) -> Iterator[threading.Thread]:
    """The agent's loop in a thread (no scaling); on the way out it is stopped,
    then the test's socket and context are closed, and the loop must have ended."""
    thread = threading.Thread(target=agent.run, args=(lambda _a: Actions(),), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        agent.stopping = True
        thread.join(30)
        sock.close()
        if not thread.is_alive():  # a live loop still owns its sockets: leave them
            ctx.destroy(linger=0)
    assert not thread.is_alive(), "the agent's loop did not end"
