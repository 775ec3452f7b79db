"""The endpoint link over WebSocket, from the service's side, with a raw client:
a link that ends however it ends (a close, a dropped connection) ends its handler,
and the endpoint is offline at once, not when its heartbeats are missed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from stacks import running
from waiting import wait_until

from funcx_flows import messages as m
from funcx_flows.endpoint.link import link_url
from funcx_flows.localstack import LocalStack
from funcx_flows.wsconn import WsConnection


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # heartbeats would take the endpoint offline only after 10 minutes
    with running(Path(tmp_path_factory.mktemp("wslink")),
                 env={"FUNCX_FLOWS_HEARTBEAT_THRESHOLD_S": "600"}) as s:
        yield s


def _state(stack: LocalStack, endpoint_id: str) -> str:
    with stack.client() as c:
        return str(c.get_endpoint_status(endpoint_id)["state"])


def _wait_state(stack: LocalStack, endpoint_id: str, state: str, timeout: float = 30) -> None:
    wait_until(lambda: _state(stack, endpoint_id) == state, timeout,
               f"endpoint {endpoint_id} to be {state}", interval=0.1)


def _linked(stack: LocalStack, name: str) -> tuple[str, WsConnection]:
    public, _ = zmq.curve_keypair()
    with stack.client() as c:
        reg = c.register_endpoint(name, public.decode())
    eid = str(reg["endpoint_id"])
    ws = WsConnection.open(link_url(stack.service_url, eid),
                           {"Authorization": f"Bearer {reg['link_token']}"}, ping_interval=60)
    ws.send(m.encode(m.Hello(endpoint_id=eid, agent_version="1", python_version="3.11",
                             hostname="raw", held_task_ids=[])))
    welcome = m.Decoder(m.SERVICE_TO_AGENT).decode(ws.recv())
    assert isinstance(welcome, m.Welcome)
    _wait_state(stack, eid, "online")
    return eid, ws


def test_a_closed_link_takes_its_endpoint_offline_at_once(stack: LocalStack) -> None:
    eid, ws = _linked(stack, "closes")
    ws.close()  # a closing handshake, no Bye
    _wait_state(stack, eid, "offline")


def test_a_dropped_connection_takes_its_endpoint_offline_at_once(stack: LocalStack) -> None:
    eid, ws = _linked(stack, "drops")
    sock = ws._sock  # no closing handshake: the TCP connection just ends
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    _wait_state(stack, eid, "offline")
