"""The interchange's shell over a real ROUTER, with two test-owned manager
sockets: a cancel reaches the manager holding the task, tasks handed back
(Requeue) go to the other manager in their order, the cancelled one ends
cancelled, results come back to the agent once. What each of these means is
InterchangeState's (tests/unit/endpoint/test_interchange_state.py covers the
races and retries event by event); this checks only that the shell carries
it over the wire. It waits on sockets, never on a sleep."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import zmq
from simulated import manager_register

from funcx_flows import messages as m
from funcx_flows.endpoint.interchange import Interchange


class Wire:
    def __init__(self, ctx: zmq.Context) -> None:
        self.ix = Interchange(ctx, "127.0.0.1", heartbeat_period_s=5, heartbeat_threshold_s=60)
        self.poller = zmq.Poller()
        self.poller.register(self.ix.sock, zmq.POLLIN)
        self.results: list[m.TaskResult] = []
        self.managers: dict[str, zmq.Socket] = {}
        self._decoder = m.Decoder(m.INTERCHANGE_TO_MANAGER)

    def manager(self, ctx: zmq.Context, name: str, free: int) -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.routing_id = name.encode()
        sock.linger = 0
        sock.connect(f"tcp://127.0.0.1:{self.ix.port}")
        sock.send(m.encode(manager_register(name, 2)))
        sock.send(m.encode(m.Ready(free=free)))
        self.managers[name] = sock
        self.until(lambda: name in self.ix.managers and self.ix.managers[name].free == free)
        return sock

    def turn(self) -> None:
        """One turn of the agent's loop, as far as the interchange goes."""
        if dict(self.poller.poll(50)):
            self.ix.on_readable()
        self.ix.turn()
        self.results += self.ix.take()[0]

    def until(self, done: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the interchange never got there"
            self.turn()

    def received(self, name: str, kind: type) -> m.Message:
        """The next message of ``kind`` the manager ``name`` got (others skipped)."""
        sock = self.managers[name]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.turn()
            while sock.poll(0):
                msg = self._decoder.decode(sock.recv())
                if isinstance(msg, kind):
                    return msg
        raise AssertionError(f"{name} got no {kind.__name__}")


@pytest.fixture
def wire() -> Iterator[tuple[Wire, zmq.Context]]:
    ctx = zmq.Context()
    w = Wire(ctx)
    try:
        yield w, ctx
    finally:
        for sock in w.managers.values():
            sock.close()
        w.ix.close()
        ctx.destroy(linger=0)


def test_a_cancel_and_a_hand_back_travel_over_the_wire(wire):
    w, ctx = wire
    m1 = w.manager(ctx, "m1", free=4)
    m2 = w.manager(ctx, "m2", free=0)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    w.ix.submit([m.TaskSpec(task_id=t, function_id="f", function=b"", payload=b"")
                 for t in ids])
    assert [t.task_id for t in w.received("m1", m.Tasks).tasks] == ids  # type: ignore[attr-defined]
    w.ix.cancel(ids[:1])
    assert w.received("m1", m.Cancel) == m.Cancel(task_ids=ids[:1])
    # m1 had not seen the Cancel: it hands all four back (its tasks turned long)
    m1.send(m.encode(m.Requeue(task_ids=ids)))
    w.until(lambda: len(w.results) == 1)
    assert w.results[0].task_id == ids[0] and w.results[0].error is not None
    assert w.results[0].error.code == "cancelled"
    m2.send(m.encode(m.Ready(free=3)))
    tasks = w.received("m2", m.Tasks).tasks  # type: ignore[attr-defined]
    assert [t.task_id for t in tasks] == ids[1:]  # the live ones, in their order
    m2.send(m.encode(m.Results(results=[m.TaskResult(task_id=t, ok=True) for t in ids[1:]],
                               free=3)))
    w.until(lambda: len(w.results) == 4)
    assert sorted(r.task_id for r in w.results) == sorted(ids)
    assert not w.ix.known and not w.ix.cancelling
