"""A task cancelled while a manager holds it ends cancelled, whatever the manager
does next: hand it back (Requeue), be lost, or report its worker lost. It is
never queued again. A real interchange, a test-owned manager socket."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import zmq
from simulated import manager_register

from funcx_flows import messages as m
from funcx_flows.endpoint.interchange import Interchange


@pytest.fixture
def setup() -> Iterator[tuple[Interchange, zmq.Socket]]:
    ctx = zmq.Context()
    ix = Interchange(ctx, "127.0.0.1", max_retries=1, heartbeat_period_s=0.2,
                     heartbeat_threshold_s=1.0)
    mgr = ctx.socket(zmq.DEALER)
    mgr.routing_id = b"m1"
    mgr.linger = 0
    mgr.connect(f"tcp://127.0.0.1:{ix.port}")
    mgr.send(m.encode(manager_register("m1", 2)))
    mgr.send(m.encode(m.Ready(free=4)))
    yield ix, mgr
    mgr.close()
    ix.close()
    ctx.destroy(linger=0)


def spin(ix: Interchange, until: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the interchange never got there"
        ix.on_readable()
        ix.turn()
        time.sleep(0.01)


def received(mgr: zmq.Socket, kind: type, timeout: float = 10) -> m.Message:
    decoder = m.Decoder(m.INTERCHANGE_TO_MANAGER)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mgr.poll(100):
            msg = decoder.decode(mgr.recv())
            if isinstance(msg, kind):
                return msg
    raise AssertionError(f"no {kind.__name__} came")


def placed(ix: Interchange, n: int) -> list[str]:
    """Ids of ``n`` new tasks, once the interchange has sent them to the manager."""
    spin(ix, lambda: "m1" in ix.managers and ix.managers["m1"].free == 4)
    tasks = [m.TaskSpec(task_id=str(uuid.uuid4()), function_id="f", function=b"",
                        payload=b"") for _ in range(n)]
    ix.submit(tasks)
    spin(ix, lambda: not ix.pending)
    return [t.task_id for t in tasks]


def test_handed_back_after_a_cancel(setup):
    ix, mgr = setup
    ids = placed(ix, 4)
    assert [s.task_id for s in received(mgr, m.Tasks).tasks] == ids
    ix.cancel(ids[:2])
    assert received(mgr, m.Cancel).task_ids == ids[:2]
    # the manager, not having seen the Cancel yet, hands three back
    mgr.send(m.encode(m.Requeue(task_ids=ids[:3])))
    results: list[m.TaskResult] = []

    def cancelled_two() -> bool:
        results.extend(ix.take()[0])
        return len(results) >= 2

    spin(ix, cancelled_two)
    assert sorted(r.task_id for r in results) == sorted(ids[:2])
    assert all(r.error is not None and r.error.code == "cancelled" for r in results)
    assert [s.task_id for s in ix.pending] == [ids[2]]  # only the live one queued again
    assert ids[3] in ix.managers["m1"].tasks


def test_a_lost_manager_or_worker_does_not_bring_a_cancelled_task_back(setup):
    ix, mgr = setup
    ids = placed(ix, 3)
    ix.cancel(ids)
    received(mgr, m.Cancel)
    # its worker died first: no retry (max_retries=1 would allow one)
    mgr.send(m.encode(m.Results(results=[m.TaskResult(
        task_id=ids[0], ok=False, attempts=1,
        error=m.ErrorInfo(code="worker_lost", message="the worker died"))])))
    results: list[m.TaskResult] = []

    def ended(n: int) -> Callable[[], bool]:
        def check() -> bool:
            results.extend(ix.take()[0])
            return len(results) >= n
        return check

    spin(ix, ended(1))
    assert results[0].task_id == ids[0] and not ix.pending
    # then the manager goes silent and is declared lost: the other two end cancelled
    spin(ix, ended(3), timeout=15)
    assert {r.task_id: r.error.code for r in results[1:] if r.error} == {
        ids[1]: "cancelled", ids[2]: "cancelled"}
    assert not ix.pending and not ix.cancelling
