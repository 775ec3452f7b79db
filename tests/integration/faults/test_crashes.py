"""kill -9 of the endpoint agent and of the service with tasks in flight: every
task ends with exactly one result in the client, none lost."""

from __future__ import annotations

import psutil
import pytest
from stacks import MakeStack
from waiting import wait_until

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor

N = 2000
CONFIG = {"max_workers_per_node": 2, "heartbeat_period_s": 0.5, "heartbeat_threshold_s": 3}


def work(i):
    import time

    time.sleep(0.002)
    return i * 3


@pytest.fixture
def stack(make_stack: MakeStack) -> LocalStack:
    return make_stack(env={"FUNCX_FLOWS_HEARTBEAT_PERIOD_S": "0.5",
                           "FUNCX_FLOWS_HEARTBEAT_THRESHOLD_S": "3"}, endpoints={"ep": CONFIG})


def _wait_for_some(futures, n: int, timeout: float = 60) -> None:
    wait_until(lambda: sum(f.done() for f in futures) >= n, timeout, f"{n} results")


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def test_kill_9_of_the_endpoint_then_restart_loses_nothing(stack: LocalStack):
    client = stack.client()
    ep = stack.endpoints["ep"]
    with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
        futures = [ex.submit(work, i) for i in range(N)]
        _wait_for_some(futures, N // 10)
        children = _descendants(ep.proc.pid)
        stack.kill_endpoint("ep")
        # the managers and workers of the dead agent end with it
        _gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [p.pid for p in alive]
        assert sum(f.done() for f in futures) < N, "too late: everything had finished"
        stack.start_endpoint("ep", CONFIG)
        values = [f.result(timeout=180) for f in futures]
    assert values == [i * 3 for i in range(N)]
    records = client.fetch_tasks([f.task_id for f in futures])
    assert len(records) == N and {r["state"] for r in records} == {"success"}
    client.close()


def test_kill_9_of_the_service_then_restart_loses_nothing(stack: LocalStack):
    client = stack.client()
    ep = stack.endpoints["ep"]
    with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
        futures = [ex.submit(work, i) for i in range(N)]
        _wait_for_some(futures, N // 10)
        stack.restart_service(kill=True)
        # submissions while it was down or after it returned also land
        late = [ex.submit(work, i) for i in range(N, N + 200)]
        values = [f.result(timeout=180) for f in futures + late]
        assert ex._stream.reconnects >= 1  # the result stream came back by itself
    assert values == [i * 3 for i in range(N + 200)]
    client.close()
