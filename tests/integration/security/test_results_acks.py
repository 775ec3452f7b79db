"""The service acknowledges an endpoint's results once they are stored, coalescing
the acks of results that arrive close together (one message for many), and still
acknowledges each one: a result the agent is never told about is resent forever."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from stacks import running
from test_channel_and_limits import answers, dealer, hello, register

from funcx_flows import messages as m
from funcx_flows import serialize
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import b64encode


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running(Path(tmp_path_factory.mktemp("acks")) / "home") as s:
        yield s


def receive(sock: zmq.Socket, want: type, timeout_s: float = 20.0) -> list:
    """Messages of type ``want`` arriving within timeout_s (others skipped)."""
    decoder = m.Decoder(m.SERVICE_TO_AGENT)
    got = []
    deadline = time.time() + timeout_s
    while time.time() < deadline and sock.poll(100):
        msg = decoder.decode(sock.recv())
        if isinstance(msg, want):
            got.append(msg)
    return got


def test_results_sent_together_are_acknowledged_together_and_all(stack):
    client = stack.client()
    ep, pub, sec = register(client, "fake-agent")
    fid = client.register_function(pow)
    ctx = zmq.Context()
    try:
        sock = dealer(ctx, ep["zmq_url"], ep["service_public_key"], pub, sec,
                      ep["endpoint_id"])
        sock.send(hello(ep["endpoint_id"]))
        assert answers(sock, 10000)
        task_ids = client.submit_tasks([
            {"function_id": fid, "endpoint_id": ep["endpoint_id"],
             "payload": b64encode(serialize.pack_call((2, i), {}))} for i in range(20)])
        specs = []
        decoder = m.Decoder(m.SERVICE_TO_AGENT)
        deadline = time.time() + 20
        while len(specs) < 20 and time.time() < deadline and sock.poll(500):
            msg = decoder.decode(sock.recv())
            if isinstance(msg, m.Tasks):
                specs.extend(msg.tasks)
        assert sorted(s.task_id for s in specs) == sorted(task_ids)
        now = time.time()
        # twenty messages, one result each, 2 ms apart: each handled on its own (messages
        # waiting together are merged anyway), as one task at a time would send them
        for i, spec in enumerate(specs):
            sock.send(m.encode(m.Results(results=[m.TaskResult(
                task_id=spec.task_id, ok=True, data=serialize.pack(2 ** i),
                started_at=now, finished_at=now)])))
            time.sleep(0.002)
        acks = receive(sock, m.ResultsAck, timeout_s=3.0)
        acked = [t for a in acks for t in a.task_ids]
        assert sorted(acked) == sorted(task_ids)
        assert len(acks) <= len(specs) // 2, f"{len(acks)} acks for {len(specs)} messages"
        # stored before acknowledged: the client reads every one back
        results = client.get_results(task_ids)
        assert sorted(results.values()) == sorted(2 ** i for i in range(20))
        # a duplicate (the agent resending after a lost ack) is acknowledged again
        sock.send(m.encode(m.Results(results=[m.TaskResult(
            task_id=specs[0].task_id, ok=True, data=serialize.pack(0), started_at=now,
            finished_at=now)])))
        again = receive(sock, m.ResultsAck, timeout_s=3.0)
        assert [t for a in again for t in a.task_ids] == [specs[0].task_id]
        assert client.get_result(specs[0].task_id) == 1  # the first result stands
    finally:
        ctx.destroy(linger=0)  # closes the socket too, when an assertion failed
        client.close()
