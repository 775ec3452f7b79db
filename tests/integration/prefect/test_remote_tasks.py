"""remote_task, EndpointTaskRunner and remote_map under a real Prefect server and a
real service and endpoint."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import threading
import time

import pytest
from prefect import flow, task, unmapped
from prefect.cache_policies import INPUTS
from prefectruns import flow_logs, task_runs
from waiting import finished_task

from funcx_flows import EndpointTaskRunner, ShellFunction, ShellResult, remote_map, remote_task
from funcx_flows.errors import PartialFailure, RemoteExecutionError

pytestmark = pytest.mark.usefixtures("stack")


@remote_task(endpoint="ep")
def add(x, y=0):
    print(f"adding {x} and {y}")
    return x + y


@remote_task(endpoint="ep", name="renamed-square", tags=["gpu", "beamline"])
def square(x):
    return x * x


@remote_task(endpoint="ep")
def fails(x):
    raise ValueError(f"cannot handle {x}")


def test_call_submit_map_unmapped_wait_for_and_futures_between_tasks():
    @task
    def local_double(x):
        return 2 * x

    @flow
    def pipeline():
        a = add(1, 2)
        b = add.submit(10, y=5)
        c = add.map([1, 2, 3], y=unmapped(100))
        d = square.submit(b)  # a future passed to a remote task
        e = local_double.submit(d, wait_for=[c])
        return a, b.result(), [x.result() for x in c], d.result(), e.result()

    assert pipeline() == (3, 15, [101, 102, 103], 225, 450)


def test_remote_output_lands_in_the_prefect_log_and_names_and_tags_hold():
    @flow
    def logged():
        add(20, 22)
        return square(3)

    state = logged(return_state=True)
    assert state.is_completed()
    messages = flow_logs(state.state_details.flow_run_id)
    assert "(remote) adding 20 and 22" in messages
    assert any(m.startswith("running add on endpoint ep as remote task") for m in messages)
    runs = task_runs(state.state_details.flow_run_id)
    sq = [r for r in runs if r.name.startswith("renamed-square")]
    assert sq and {"gpu", "beamline"} <= set(sq[0].tags)


def test_remote_exception_fails_the_task_with_the_remote_traceback():
    @flow
    def failing():
        return fails(7)

    state = failing(return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ValueError) and str(exc) == "cannot handle 7"
    assert isinstance(exc.__cause__, RemoteExecutionError)
    assert "in fails" in exc.__cause__.remote_traceback


def test_a_lost_worker_is_retried_by_prefect_retries(tmp_path):
    marker = str(tmp_path / "first-attempt")

    @remote_task(endpoint="ep", retries=2, retry_delay_seconds=0)
    def dies_once(path):
        import os

        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(3)
        return "survived"

    @flow
    def retried():
        return dies_once(marker)

    state = retried(return_state=True)
    assert state.result() == "survived"
    runs = task_runs(state.state_details.flow_run_id)
    assert max(r.run_count for r in runs) == 2


def test_timeout_cancels_the_remote_task(stack, tmp_path):
    # the body runs until released (never, within the test's bound); released at the
    # end so that its worker is free for the next tests, not busy for a minute
    release = tmp_path / "release"

    @remote_task(endpoint="ep", timeout_seconds=1)
    def too_slow(path):
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.05)

    @flow
    def impatient():
        return too_slow(str(release))

    started = time.monotonic()
    try:
        state = impatient(return_state=True)
        assert state.is_failed() and time.monotonic() - started < 30
        assert isinstance(state.result(raise_on_failure=False), TimeoutError)
        messages = flow_logs(state.state_details.flow_run_id)
        line = next(m for m in messages if "too_slow on endpoint ep as remote task" in m)
        task_id = line.rsplit(" ", 1)[1]
        client = stack.client()
        finished_task(client, task_id, 30, states=("cancelled",))
        client.close()
    finally:
        release.touch()


def test_tag_concurrency_limits_hold_for_remote_tasks():
    from prefect import get_client

    @remote_task(endpoint="ep", tags=["one-at-a-time"])
    def span(i):
        import time

        start = time.time()
        time.sleep(0.3)
        return start, time.time()

    @flow
    def limited():
        return [f.result() for f in [span.submit(i) for i in range(3)]]

    with get_client(sync_client=True) as c:
        c.create_concurrency_limit(tag="one-at-a-time", concurrency_limit=1)
    try:
        spans = sorted(limited())
    finally:
        with get_client(sync_client=True) as c:
            c.delete_concurrency_limit_by_tag(tag="one-at-a-time")
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans


def test_cache_policy_reuses_results(tmp_path):
    log = str(tmp_path / "calls.log")

    @remote_task(endpoint="ep", cache_policy=INPUTS, persist_result=True)
    def counted(path, x):
        with open(path, "a") as f:
            f.write("x\n")
        return x * 10

    @flow
    def cached():
        return counted(log, 4), counted(log, 4), counted(log, 5)

    assert cached() == (40, 40, 50)
    with open(log) as f:
        assert len(f.readlines()) == 2


def test_async_flows_and_async_functions():
    @remote_task(endpoint="ep")
    async def async_remote(x):
        import asyncio

        await asyncio.sleep(0.01)
        return x + 1

    @flow
    async def async_pipeline():
        a = await async_remote(1)
        b = await asyncio.gather(async_remote(10), async_remote(20))
        return a, list(b)

    assert asyncio.run(async_pipeline()) == (2, [11, 21])


def test_offline_endpoint_makes_the_task_wait_then_time_out(stack):
    import zmq

    client = stack.client()
    client.register_endpoint("asleep", zmq.curve_keypair()[0].decode())
    client.close()

    @remote_task(endpoint="asleep", timeout_seconds=2)
    def never_runs():
        return 1

    @flow
    def waiting():
        return never_runs()

    state = waiting(return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), TimeoutError)
    assert any("offline" in m for m in flow_logs(state.state_details.flow_run_id))


def test_task_runner_sends_every_task_and_holds_many_without_a_thread_each():
    @task
    def inc(x):
        return x + 1

    @task
    def total(xs):
        return sum(xs)

    peak = []

    @flow(task_runner=EndpointTaskRunner(endpoint="ep"))
    def many(n):
        futures = inc.map(range(n))
        peak.append(threading.active_count())
        return total.submit(futures).result(), [f.result() for f in futures][-1]

    before = threading.active_count()
    assert many(1000) == (sum(range(1, 1001)), 1000)
    assert peak[0] - before < 40, f"{peak[0] - before} threads for 1000 tasks in flight"


def test_task_runner_pickles_and_duplicates():
    runner = EndpointTaskRunner(endpoint="ep")
    clone = pickle.loads(pickle.dumps(runner))
    assert clone == runner and clone.duplicate() == runner
    with clone.duplicate() as started:
        again = pickle.loads(pickle.dumps(started))
        assert again == runner


def test_remote_map_returns_in_order_and_names_failures():
    def picky(i):
        if i % 500 == 7:
            raise ValueError(f"bad input {i}")
        return i * 2

    @flow
    def mapped(n):
        return remote_map(picky, range(n), endpoint="ep", return_exceptions=True)

    out = mapped(2000)
    assert [out[i] for i in range(0, 2000, 97) if i % 500 != 7] == \
        [i * 2 for i in range(0, 2000, 97) if i % 500 != 7]
    assert all(type(out[i]) is ValueError for i in (7, 507, 1007, 1507))

    @flow
    def strict():
        return remote_map(picky, range(1000), endpoint="ep")

    with pytest.raises(PartialFailure) as info:
        strict()
    assert sorted(info.value.failures) == [7, 507]
    assert "[7] ValueError: bad input 7" in str(info.value) and "bad input 507" in str(info.value)


def test_remote_map_outside_a_flow_just_runs():
    assert remote_map(pow, [2, 3], [3, 2], endpoint="ep") == [8, 9]
    assert os.environ["FUNCX_FLOWS_EXAMPLE_ENDPOINT"] == "ep"


def test_shell_functions_as_remote_tasks_and_in_remote_map():
    count = remote_task(ShellFunction("echo {0} | wc -c", name="count-chars"), endpoint="ep")

    @flow
    def shell_steps():
        one = count("abc")
        many = remote_map(ShellFunction("echo {0}-{1}; exit {1}"), ["a", "b"], [0, 2],
                          endpoint="ep")
        return one, many

    one, many = shell_steps()
    assert isinstance(one, ShellResult) and one.stdout.strip() == "4"
    assert [(r.stdout, r.returncode) for r in many] == [("a-0\n", 0), ("b-2\n", 2)]
    assert count.name == "count-chars"
