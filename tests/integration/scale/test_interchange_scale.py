"""One real interchange, fed as the agent feeds it, serving 1,000 worker slots of
20 simulated managers in two other processes: every one of 20,000 tasks comes back
exactly once, and every manager gets work. (No timings here: the full-scale run,
8,000 slots, is benchmarks/bench_scale.py.)"""

from __future__ import annotations

import threading

from simulated import (
    InterchangeHost,
    ManagerFleet,
    feed,
    noop_spec_factory,
)
from zmq.utils.garbage import GarbageCollectorThread

from funcx_flows.endpoint import interchange

MANAGERS = 20
SLOTS = 50
TASKS = 20_000


def test_every_task_comes_back_once_and_all_managers_share_the_work(monkeypatch):
    # the status lists only a few managers; totals and per-block load still cover all
    monkeypatch.setattr(interchange, "MAX_LISTED_MANAGERS", 5)
    threads_before = set(threading.enumerate())
    make = noop_spec_factory(b"function", b"payload")
    with InterchangeHost(heartbeat_period_s=0.5, heartbeat_threshold_s=30) as host:
        fleet = ManagerFleet(host.url, MANAGERS, SLOTS, procs=2, heartbeat_period_s=0.5)
        try:
            fleet.start()
            host.wait_for_slots(MANAGERS, MANAGERS * SLOTS, timeout_s=20)
            status = host.interchange.status()
            assert len(status.managers) == 5 and status.managers_total == MANAGERS
            assert sum(b.managers for b in status.block_load) == MANAGERS
            assert sum(b.workers for b in status.block_load) == MANAGERS * SLOTS
            # fed in steps (at most 4x the slots waiting), as a busy service feeds it
            report = feed(host, TASKS, make, window=4 * MANAGERS * SLOTS, stall_s=20)
        finally:
            answered = fleet.stop()
        assert not host.interchange.known, "the interchange still holds tasks"

    assert not report.stalled
    assert (report.received, report.missing, report.duplicates, report.failed) \
        == (TASKS, 0, 0, 0)
    assert report.max_managers_seen == MANAGERS
    assert report.max_slots_seen == MANAGERS * SLOTS
    assert sorted(answered) == fleet.manager_ids
    assert sum(answered.values()) == TASKS
    idle = [mid for mid, n in answered.items() if n == 0]
    assert not idle, f"managers that got no work: {idle}"
    assert not fleet.processes
    # (pyzmq's own garbage-collector thread, started by the first zero-copy send,
    # lives as long as the process: it is not ours to stop)
    left = [t for t in set(threading.enumerate()) - threads_before
            if not isinstance(t, GarbageCollectorThread)]
    assert not left, f"threads left behind: {left}"
