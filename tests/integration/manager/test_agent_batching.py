"""A real agent (inline block, 2 forked workers) against a test-owned CurveZMQ
service socket: under load its results leave in a few large messages, each
result exactly once (the hold's rule itself: tests/unit/endpoint/test_outbox.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from curve_peers import curve_service, running
from waiting import wait_until

from funcx_flows import messages as m
from funcx_flows import serialize
from funcx_flows.endpoint.agent import Agent
from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.outbox import RESULTS_HOLD_MAX
from funcx_flows.endpoint.providers.inline import InlineProvider


def echo(x):
    return x


class FakeService:
    def __init__(self, sock: zmq.Socket, ident: bytes) -> None:
        self.sock, self.ident = sock, ident
        self.decoder = m.Decoder(m.AGENT_TO_SERVICE)
        self.messages: list[list[m.TaskResult]] = []  # one list per Results message

    def submit(self, n: int) -> list[str]:
        fn = serialize.pack_function(echo)
        specs = [m.TaskSpec(task_id=str(uuid.uuid4()), function_id="f", function=fn,
                            payload=serialize.pack_call((i,), {})) for i in range(n)]
        self.sock.send_multipart([self.ident, m.encode(m.Tasks(tasks=specs))])
        return [s.task_id for s in specs]

    def collect(self, ids: list[str], timeout: float = 60) -> dict[str, list[m.TaskResult]]:
        """Every result for ``ids`` (a list each: a duplicate would show)."""
        seen: dict[str, list[m.TaskResult]] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < len(ids):
            assert time.monotonic() < deadline, f"{len(ids) - len(seen)} results never came"
            if not self.sock.poll(200):
                continue
            msg = self.decoder.decode(self.sock.recv_multipart()[1])
            if isinstance(msg, m.Results):
                self.messages.append(msg.results)
                for r in msg.results:
                    seen.setdefault(r.task_id, []).append(r)
        return seen


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FakeService]:
    ctx = zmq.Context()
    sock, reg = curve_service(ctx)
    config = EndpointConfig.model_validate({
        "provider": "inline", "max_workers_per_node": 2, "heartbeat_threshold_s": 60})
    folder = tmp_path / "ep"
    folder.mkdir()
    agent = Agent(config, folder, reg, InlineProvider())
    with running(agent, sock, ctx):
        assert sock.poll(30_000), "the agent never said hello"
        ident = sock.recv_multipart()[0]
        sock.send_multipart([ident, m.encode(m.Welcome(heartbeat_period_s=2,
                                                       heartbeat_threshold_s=60))])
        wait_until(lambda: agent.status.workers_total >= 2, 30, "the inline block's workers")
        yield FakeService(sock, ident)


def test_a_bursts_results_leave_together_each_once(service: FakeService):
    ids = service.submit(2000)
    seen = service.collect(ids)
    assert all(len(rs) == 1 and rs[0].ok for rs in seen.values())
    assert [serialize.unpack(seen[t][0].data) for t in ids] == list(range(2000))
    # one message per loop turn would be hundreds (about 1,000 measured with the
    # hold at zero)
    assert len(service.messages) <= 200, len(service.messages)
    assert max(len(batch) for batch in service.messages) <= RESULTS_HOLD_MAX
