"""kill -9 of a manager: the interchange notices the lost heartbeats, retries its
tasks up to ``max_retries_on_system_failure``, then fails them with ManagerLost."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from stacks import MakeStack
from waiting import wait_until

from funcx_flows.errors import ManagerLost
from funcx_flows.sdk.executor import Executor


def nap(i, release):
    """Busy until the test releases it (after the kill: a retry returns at once)."""
    import os
    import time

    while not os.path.exists(release):
        time.sleep(0.05)
    return i


def _is_manager(p: psutil.Process | None) -> bool:
    try:
        return p is not None and "funcx_flows.endpoint.manager" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def _managers(pid: int) -> list[psutil.Process]:
    """Managers, not their workers (forked: the same command line, a manager parent)."""
    return [p for p in psutil.Process(pid).children(recursive=True)
            if _is_manager(p) and not _is_manager(p.parent())]


def _kill_the_manager_when_busy(ep_pid: int, client, futures) -> int:
    def all_running() -> bool:
        ids = [f.task_id for f in futures if f.task_id]
        return len(ids) == len(futures) and all(
            r["state"] == "running" for r in client.fetch_tasks(ids))

    wait_until(all_running, 60, "the tasks to run")
    (manager,) = _managers(ep_pid)
    manager.kill()
    return manager.pid


@pytest.mark.parametrize("retries", [1, 0])
def test_kill_9_of_a_manager(make_stack: MakeStack, retries: int, tmp_path: Path):
    release = str(tmp_path / "release")
    stack = make_stack()
    ep = stack.start_endpoint("ep", {
        "max_workers_per_node": 2, "heartbeat_period_s": 0.5, "heartbeat_threshold_s": 2,
        "max_retries_on_system_failure": retries})
    client = stack.client()
    with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
        futures = [ex.submit(nap, i, release) for i in range(2)]
        killed = _kill_the_manager_when_busy(ep.proc.pid, client, futures)
        Path(release).touch()
        if retries:
            # a new block's manager takes the retried tasks
            assert [f.result(timeout=90) for f in futures] == [0, 1]
            assert all(f.record["attempts"] == 2 for f in futures)
            assert [p.pid for p in _managers(ep.proc.pid)] != [killed]
        else:
            for f in futures:
                with pytest.raises(ManagerLost, match="heartbeat"):
                    f.result(timeout=90)
        # the endpoint goes on either way
        assert ex.submit(nap, 7, release).result(timeout=90) == 7
