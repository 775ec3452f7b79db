"""Inline blocks: a real interchange and managers in the test's own poll loop (as
the agent runs them), forking real workers. Tasks come back right; a cancelled
block takes its workers with it and its running task ends as the pilot's loss."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psutil
import pytest
import zmq

from funcx_flows import messages as m
from funcx_flows import serialize
from funcx_flows.endpoint.interchange import Interchange
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.providers.base import CANCELLED, RUNNING
from funcx_flows.endpoint.providers.inline import InlineManagers, InlineProvider


def square(x):
    return x * x


def nap(seconds):
    import time

    time.sleep(seconds)


class Loop:
    """The agent's loop, reduced to the interchange and its inline managers."""

    def __init__(self, ix: Interchange, inline: InlineManagers) -> None:
        self.ix, self.inline = ix, inline
        self.poller = zmq.Poller()
        self.poller.register(ix.sock, zmq.POLLIN)
        self.results: dict[str, m.TaskResult] = {}

    def turn(self) -> None:
        self.inline.sync()
        self.inline.update_poller(self.poller)
        events = dict(self.poller.poll(self.inline.poll_ms(50)))
        if self.ix.sock in events:
            self.ix.on_readable()
        self.inline.on_events(events)
        self.ix.turn()
        self.inline.feed()
        self.results.update((r.task_id, r) for r in self.ix.take()[0])

    def until(self, done, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the loop never got there"
            self.turn()


@pytest.fixture
def loop() -> Iterator[Loop]:
    ctx = zmq.Context()
    ix = Interchange(ctx, "127.0.0.1", heartbeat_period_s=0.5, heartbeat_threshold_s=5)
    provider = InlineProvider()
    inline = InlineManagers(provider, ix, lambda block_id: ManagerOptions(
        interchange="inline", block_id=block_id, workers=2, prefetch=2,
        heartbeat_period_s=0.5, heartbeat_threshold_s=5))
    try:
        yield Loop(ix, inline)
    finally:
        inline.close()
        ix.close()
        ctx.destroy(linger=0)


def specs(fn: object, args: list[object]) -> list[m.TaskSpec]:
    body = serialize.pack_function(fn)
    return [m.TaskSpec(task_id=str(uuid.uuid4()), function_id="f", function=body,
                       payload=serialize.pack_call((a,), {})) for a in args]


def test_tasks_run_on_workers_the_loop_forked(loop: Loop):
    block = loop.inline.provider.submit("b1", "never run")
    assert block.state == RUNNING
    loop.until(lambda: loop.ix.status().workers_total == 2)
    tasks = specs(square, list(range(300)))
    loop.ix.submit(tasks)
    loop.until(lambda: len(loop.results) == len(tasks))
    assert [serialize.unpack(loop.results[t.task_id].data) for t in tasks] == [
        i * i for i in range(300)]
    mgr = loop.inline.managers["b1"]
    workers = {w.proc.pid for w in mgr.workers.values()}
    assert workers <= {c.pid for c in psutil.Process().children()}  # ours, no manager


def test_a_cancelled_block_takes_its_workers_and_fails_its_running_task(loop: Loop):
    loop.inline.provider.submit("b1", "never run")
    loop.until(lambda: loop.ix.status().workers_total == 2)
    (long,) = specs(nap, [60])
    loop.ix.submit([long])
    loop.until(lambda: any(p.tasks for p in loop.inline.managers["b1"].state.pipes.values()))
    procs = [w.proc for w in loop.inline.managers["b1"].workers.values()]
    loop.inline.provider.cancel(["b1"])
    loop.until(lambda: long.task_id in loop.results)
    err = loop.results[long.task_id].error
    assert err is not None and err.code == "pilot_ended"
    assert not loop.inline.managers and not loop.ix.managers
    assert not any(p.is_alive() for p in procs)
    assert [b.state for b in loop.inline.provider.poll()] == [CANCELLED]


def test_a_failing_manager_ends_its_block_not_the_loop(loop: Loop):
    """What a manager's step raises (a fork refused for want of memory, say) fails
    that block, with the cause, for the scaler to see; the loop and the other
    blocks go on."""
    loop.inline.provider.submit("b1", "never run")
    loop.inline.provider.submit("b2", "never run")
    loop.until(lambda: loop.ix.status().workers_total == 4)
    before = loop.inline.provider.poll()

    def refuse() -> None:
        raise OSError(12, "Cannot allocate memory")

    loop.inline.managers["b1"].feed = refuse  # type: ignore[method-assign]
    tasks = specs(square, list(range(50)))
    loop.ix.submit(tasks)
    loop.until(lambda: len(loop.results) == len(tasks))
    assert all(r.ok or r.error.code == "pilot_ended"  # type: ignore[union-attr]
               for r in loop.results.values())
    states = {b.block_id: (b.state, b.message) for b in loop.inline.provider.poll()}
    assert states["b1"] == ("failed", "OSError: [Errno 12] Cannot allocate memory")
    assert states["b2"] == ("running", "")
    assert [b.state for b in before] == ["running", "running"]  # copies, not live
    assert list(loop.inline.managers) == ["b2"]
