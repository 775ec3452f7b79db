"""Only the endpoint's own managers reach its interchange: a peer without this
run's credentials (no mechanism, a wrong password, another run's keys, keys of the
other mechanism) is refused in the handshake, never registered and never handed a
task; the managers a real endpoint starts connect with either mechanism."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from simulated import manager_register
from stacks import MakeStack

from funcx_flows import messages as m
from funcx_flows.endpoint.interchange import Interchange
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.linkauth import Gate, ManagerCredentials, Mechanism
from funcx_flows.sdk.executor import Executor


def double(x):
    return 2 * x


class Door:
    """An interchange behind a gate, driven by the test as the agent drives it."""

    def __init__(self, ctx: zmq.Context, mechanism: Mechanism) -> None:
        self.gate = Gate(mechanism)
        self.ix = Interchange(ctx, "127.0.0.1", heartbeat_period_s=0.5,
                              heartbeat_threshold_s=30, gate=self.gate)
        self.url = f"tcp://127.0.0.1:{self.ix.port}"
        self.poller = zmq.Poller()
        assert self.gate.sock is not None
        self.poller.register(self.gate.sock, zmq.POLLIN)
        self.poller.register(self.ix.sock, zmq.POLLIN)

    def turn_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            events = dict(self.poller.poll(20))
            if self.gate.sock in events:
                self.gate.answer()
            if self.ix.sock in events:
                self.ix.on_readable()
            self.ix.turn()


def peer(ctx: zmq.Context, url: str, name: str,
         credentials: ManagerCredentials | None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = name.encode()
    if credentials is not None:
        credentials.apply(sock)
    sock.connect(url)
    for msg in (manager_register(name, 2), m.Ready(free=4)):
        with contextlib.suppress(zmq.Again):  # a refused peer may have nowhere to queue
            sock.send(m.encode(msg), zmq.NOBLOCK)
    return sock


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.mark.parametrize("mechanism", ["curve", "password"])
def test_only_holders_of_this_runs_credentials_get_in(ctx: zmq.Context, mechanism: Mechanism):
    door = Door(ctx, mechanism)
    other = "password" if mechanism == "curve" else "curve"
    impostors = {
        "none": None,
        "another-run": Gate(mechanism).credentials,  # same mechanism, other secrets
        "other-mechanism": Gate(other).credentials,
    }
    if mechanism == "curve":  # the interchange's public key is no secret: a client key is
        c = door.gate.credentials
        public, secret = zmq.curve_keypair()
        impostors["knows-server-key"] = ManagerCredentials(
            "curve", server_key=c.server_key, public_key=public.decode(),
            secret_key=secret.decode())
    else:
        impostors["wrong-password"] = ManagerCredentials("password", password="guess")
    bad = {name: peer(ctx, door.url, name, creds) for name, creds in impostors.items()}
    good = peer(ctx, door.url, "ours", door.gate.credentials)
    door.turn_for(1.0)
    specs = [m.TaskSpec(task_id=str(uuid.uuid4()), function_id="f", function=b"",
                        payload=b"") for _ in range(8)]
    door.ix.submit(specs)
    door.turn_for(0.5)
    assert set(door.ix.managers) == {"ours"}
    decoder = m.Decoder(m.INTERCHANGE_TO_MANAGER)
    tasks: list[m.TaskSpec] = []
    while good.poll(2000):  # heartbeats, and the tasks its credit allows
        got = decoder.decode(good.recv())
        if isinstance(got, m.Tasks):
            tasks += got.tasks
        if len(tasks) >= 4:
            break
    assert len(tasks) == 4, "the manager with the credentials got no tasks"
    assert not any(s.poll(0) for s in bad.values()), "an impostor was sent something"
    # the impostors whose handshake got as far as the gate were refused there (one
    # without a mechanism, of the other mechanism or with another server key fails
    # before ZAP is asked): curve: a fresh client key; password: two wrong passwords
    assert door.gate.refused >= (1 if mechanism == "curve" else 2)
    for s in [good, *bad.values()]:
        s.close()
    door.ix.close()


@pytest.mark.parametrize("content", [
    "", "{\"mechanism\": \"telnet\"}", "[1, 2]", "{\"mechanism\": \"curve\"}",
    "{\"mechanism\": \"password\", \"password\": 5}",
    json.dumps({"mechanism": "curve", "server_key": "a" * 39, "public_key": "b" * 40,
                "secret_key": "c" * 40})])
def test_a_manager_with_unusable_credentials_says_why(tmp_path: Path, content: str):
    path = tmp_path / "creds.json"
    if content:
        path.write_text(content)
    proc = subprocess.run(
        shlex.split(ManagerOptions(interchange="tcp://127.0.0.1:9",
                                   credentials=str(path)).command()),
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "manager: " in proc.stderr and "credentials" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("mechanism", ["curve", "password"])
def test_an_endpoints_managers_connect_with_either_mechanism(make_stack: MakeStack,
                                                             mechanism: Mechanism):
    stack = make_stack()
    ep = stack.start_endpoint("ep", {"max_workers_per_node": 1, "manager_auth": mechanism})
    saved = ManagerCredentials.load(ep.folder / "manager-credentials.json")
    assert saved.mechanism == mechanism
    assert (ep.folder / "manager-credentials.json").stat().st_mode & 0o077 == 0
    with Executor(endpoint_id=ep.endpoint_id, client=stack.client()) as ex:
        assert [f.result(timeout=60) for f in [ex.submit(double, i) for i in range(5)]] \
            == [0, 2, 4, 6, 8]
