"""Fuzzed wire messages against the real agent, interchange and manager: random
bytes, multi-part frames, flipped bits, and well-typed messages with arbitrary
field values (hypothesis). None of them ends the process; each still does its
work afterwards. (The service's side: tests/integration/security.)"""

from __future__ import annotations

import os
import shlex
import time
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import zmq
from curve_peers import curve_service, running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulated import manager_register
from stacks import MakeStack
from waiting import wait_until

from funcx_flows import messages as m
from funcx_flows import serialize
from funcx_flows.endpoint.agent import MANAGER_CREDENTIALS, Agent
from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.linkauth import ManagerCredentials
from funcx_flows.endpoint.providers.local import LocalProvider
from funcx_flows.localstack import stop_process
from funcx_flows.sdk.executor import Executor

FUZZ = settings(max_examples=150, deadline=None, derandomize=False,
                suppress_health_check=list(HealthCheck))

INT64 = st.integers(-(2**63), 2**63 - 1)
st.register_type_strategy(m.TaskSpec, st.builds(
    m.TaskSpec, options=st.dictionaries(st.text(max_size=8), INT64 | st.text()),
    resources=st.none() | st.builds(m.ResourceSpec)))


def _encode(msg: m.Message) -> bytes:
    try:
        return m.encode(msg)
    except OverflowError:  # an int msgpack cannot carry: no frame can hold it
        return b""


def typed(*union: object) -> st.SearchStrategy[bytes]:
    classes = [c for u in union for c in typing.get_args(u)]
    return st.one_of(*[st.builds(c) for c in classes]).map(_encode)


def flipped(frames: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    def flip(data: bytes, where: int, bit: int) -> bytes:
        if not data:
            return data
        i = where % len(data)
        return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]

    return st.builds(flip, frames, st.integers(0, 1 << 16), st.integers(0, 7))


def frames_for(*union: object) -> st.SearchStrategy[list[bytes]]:
    one = st.one_of(st.binary(max_size=300), typed(*union), flipped(typed(*union)),
                    typed(m.SERVICE_TO_AGENT, m.AGENT_TO_SERVICE))  # the wrong direction too
    return st.lists(one, min_size=1, max_size=3)


def run_pow() -> tuple[bytes, bytes]:
    return serialize.pack_function(pow), serialize.pack_call((2, 10), {})


def _recv(sock: zmq.Socket, timeout: float) -> list[bytes] | None:
    if sock.poll(int(timeout * 1000)):
        return sock.recv_multipart()
    return None


def _wait_for_result(sock: zmq.Socket, task_id: str, timeout: float,
                     decoder: m.Decoder) -> m.TaskResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = _recv(sock, 0.5)
        if parts is None:
            continue
        try:
            msg = decoder.decode(parts[-1])
        except Exception:
            continue
        if isinstance(msg, m.Results):
            for r in msg.results:
                if r.task_id == task_id:
                    return r
    raise AssertionError(f"no result for {task_id} in {timeout}s")


# ------------------------------------------------------------------ manager --

@pytest.fixture
def fake_interchange() -> Iterator[tuple[zmq.Socket, int]]:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    yield router, port
    router.close()
    ctx.destroy(linger=0)


def test_a_manager_survives_fuzzed_frames(fake_interchange, tmp_path: Path):
    router, port = fake_interchange
    import subprocess

    proc = subprocess.Popen(
        shlex.split(ManagerOptions(
            interchange=f"tcp://127.0.0.1:{port}", block_id="fuzz", workers=1, prefetch=1,
            heartbeat_period_s=0.5, heartbeat_threshold_s=600).command()),
        stdout=(tmp_path / "manager.log").open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    try:
        first = _recv(router, 30)
        assert first is not None, "the manager never registered"
        ident = first[0]
        decoder = m.Decoder(m.MANAGER_TO_INTERCHANGE)
        assert isinstance(decoder.decode(first[1]), m.ManagerRegister)
        # Shutdown is a legitimate order, not malformed input: leave it out
        no_shutdown = typing.Union[m.Tasks, m.Cancel, m.Heartbeat]  # noqa: UP007

        @FUZZ
        @given(frames_for(no_shutdown))
        def fuzz(frames: list[bytes]) -> None:
            if len(frames) > 1 and frames[0][:1] == b"\x00":
                router.send_multipart([ident, *frames])  # a multi-part frame
            else:
                for f in frames:
                    router.send_multipart([ident, f])
            while router.poll(0):
                router.recv_multipart()

        fuzz()
        assert proc.poll() is None, "the manager died"
        fn, payload = run_pow()
        task_id = str(uuid.uuid4())
        router.send_multipart([ident, m.encode(m.Tasks(tasks=[m.TaskSpec(
            task_id=task_id, function_id="f", function=fn, payload=payload)]))])
        result = _wait_for_result(router, task_id, 60, decoder)
        assert result.ok and serialize.unpack(result.data) == 1024
        router.send_multipart([ident, m.encode(m.Shutdown(reason="done"))])
        assert proc.wait(30) == 0
    finally:
        stop_process(proc)


# -------------------------------------------------------------- interchange --

def _interchange_url(endpoint_pid: int) -> str:
    def found() -> str | None:
        for child in psutil.Process(endpoint_pid).children(recursive=True):
            try:
                args = child.cmdline()
            except psutil.Error:
                continue
            if "--options" in args:
                return ManagerOptions.from_json(args[args.index("--options") + 1]).interchange
        return None

    return wait_until(found, 30, "a manager", interval=0.1)


def triple(x):
    return 3 * x


def test_the_interchange_survives_fuzzed_managers(make_stack: MakeStack):
    stack = make_stack()
    ep = stack.start_endpoint("ep", {"max_workers_per_node": 1, "heartbeat_period_s": 0.5,
                                     "heartbeat_threshold_s": 2})
    url = _interchange_url(ep.proc.pid)
    # peers with the managers' credentials, so that the fuzz gets past the door
    credentials = ManagerCredentials.load(ep.folder / MANAGER_CREDENTIALS)
    ctx = zmq.Context()
    peers = []
    for _ in range(4):
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.routing_id = uuid.uuid4().hex.encode()
        credentials.apply(s)
        s.connect(url)
        peers.append(s)

    @FUZZ
    @given(frames_for(m.MANAGER_TO_INTERCHANGE), st.integers(0, 3))
    def fuzz(frames: list[bytes], which: int) -> None:
        peer = peers[which]
        # registered first, so that the fuzz reaches past the "unknown manager" door
        peer.send(m.encode(manager_register(peer.routing_id.decode(), 1, hostname="fuzz")))
        if len(frames) > 1 and frames[0][:1] == b"\x00":
            peer.send_multipart(frames)
        else:
            for f in frames:
                peer.send(f)
        for p in peers:
            while p.poll(0):
                p.recv_multipart()

    fuzz()
    for p in peers:
        p.close()
    ctx.destroy(linger=0)
    time.sleep(3)  # fake managers that registered are declared lost
    assert ep.proc.poll() is None, "the endpoint died"
    with Executor(endpoint_id=ep.endpoint_id, client=stack.client()) as ex:
        assert [f.result(timeout=60) for f in [ex.submit(triple, i) for i in range(20)]] \
            == [3 * i for i in range(20)]


# -------------------------------------------------------------------- agent --

def test_the_agent_survives_fuzzed_service_frames(tmp_path: Path):
    ctx = zmq.Context()
    service, reg = curve_service(ctx)
    config = EndpointConfig.model_validate({
        "init_blocks": 0, "min_blocks": 0, "allowed_functions": ["the-only-one"],
        "heartbeat_period_s": 0.5, "heartbeat_threshold_s": 30})
    folder = tmp_path / "ep"
    folder.mkdir()
    agent = Agent(config, folder, reg, LocalProvider(folder / "blocks"))
    decoder = m.Decoder(m.AGENT_TO_SERVICE)
    welcome = m.encode(m.Welcome(heartbeat_period_s=0.5, heartbeat_threshold_s=30))
    with running(agent, service, ctx) as thread:
        hello = _recv(service, 30)
        assert hello is not None and isinstance(decoder.decode(hello[1]), m.Hello)
        ident = hello[0]
        service.send_multipart([ident, welcome])

        @FUZZ
        @given(frames_for(m.SERVICE_TO_AGENT))
        def fuzz(frames: list[bytes]) -> None:
            if len(frames) > 1 and frames[0][:1] == b"\x00":
                service.send_multipart([ident, *frames])
            else:
                for f in frames:
                    service.send_multipart([ident, f])
            while service.poll(0):
                service.recv_multipart()

        fuzz()
        assert thread.is_alive(), "the agent's loop ended"
        # a Bye among the fuzz makes it reconnect: greet it again, then ask for work
        service.send_multipart([ident, welcome])
        task_id = str(uuid.uuid4())
        fn, payload = run_pow()
        service.send_multipart([ident, m.encode(m.Tasks(tasks=[m.TaskSpec(
            task_id=task_id, function_id="not-allowed", function=fn, payload=payload)]))])
        deadline = time.monotonic() + 30
        result = None
        while result is None:
            assert time.monotonic() < deadline, "the agent answered nothing"
            parts = _recv(service, 0.5)
            if parts is None:
                continue
            msg = decoder.decode(parts[1])
            if isinstance(msg, m.Hello):
                service.send_multipart([parts[0], welcome])
                service.send_multipart([parts[0], m.encode(m.Tasks(tasks=[m.TaskSpec(
                    task_id=task_id, function_id="not-allowed", function=fn,
                    payload=payload)]))])
            elif isinstance(msg, m.Results):
                result = next((r for r in msg.results if r.task_id == task_id), None)
        assert not result.ok and result.error is not None
        assert result.error.code == "function_not_allowed"
    assert os.path.exists(folder / "spool.db")
