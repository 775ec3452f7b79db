"""Prefect on Globus Compute endpoints: remote_task, EndpointTaskRunner, remote_map
and a trigger target, with the unmodified globus-compute-sdk against the stand-in
(tests/gc_standin.py) and a real RabbitMQ; a flow that mixes a funcx-flows endpoint
and a Globus Compute one; retries, timeouts and exceptions as docs/globus-compute.md
says."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from gc_standin import EP, gc
from prefect import flow, task
from prefectruns import flow_logs, task_runs

from funcx_flows import EndpointTaskRunner, GlobusComputeEndpoint, remote_map, remote_task
from funcx_flows.errors import PartialFailure, RemoteExecutionError
from funcx_flows.triggers.config import TargetConfig
from funcx_flows.triggers.state import Run, StateStore
from funcx_flows.triggers.targets import Starter

__all__ = ["gc"]
pytestmark = pytest.mark.usefixtures("prefect_server")

HERE = GlobusComputeEndpoint(EP, environment="local")


def where(x: int) -> tuple[int, str]:
    """Its value and the thread it ran on (the stand-in's workers are named)."""
    return x * x, threading.current_thread().name


def fails(x: int) -> None:
    raise ValueError(f"cannot handle {x}")


def fails_once(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("tried")
        raise RuntimeError("first attempt fails")
    return "second attempt"


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "late"


gc_square = remote_task(where, endpoint=HERE, name="gc-square")


def test_remote_task_on_a_globus_compute_endpoint_and_on_ours_in_one_flow(gc, stack):
    ours = remote_task(where, endpoint="ep", name="ours")

    @flow
    def mixed(n: int) -> tuple[tuple[int, str], tuple[int, str], list[tuple[int, str]]]:
        fut = gc_square.submit(n + 1)
        return gc_square(n), ours(n), [fut.result()]

    state = mixed(3, return_state=True)
    on_gc, on_ours, submitted = state.result()
    assert on_gc[0] == 9 and on_gc[1].startswith("gc-standin-worker")
    assert on_ours[0] == 9 and not on_ours[1].startswith("gc-standin-worker")
    assert submitted[0][0] == 16
    messages = flow_logs(state.state_details.flow_run_id)
    assert any(f"where on endpoint gc:{EP}" in m for m in messages)


def test_task_runner_with_the_gc_prefix_and_remote_map(gc, monkeypatch):
    monkeypatch.setenv("GLOBUS_SDK_ENVIRONMENT", "local")  # what "gc:<uuid>" meets

    @task
    def cube(x: int) -> int:
        return x ** 3

    @flow(task_runner=EndpointTaskRunner(endpoint=f"gc:{EP}"))
    def on_gc(xs: list[int]) -> tuple[list[int], list[tuple[int, str]]]:
        cubes = [f.result() for f in cube.map(xs)]
        return cubes, remote_map(where, xs, endpoint=f"gc:{EP}")

    cubes, mapped = on_gc([1, 2, 3, 4])
    assert cubes == [1, 8, 27, 64]
    assert [v for v, _ in mapped] == [1, 4, 9, 16]
    assert all(t.startswith("gc-standin-worker") for _, t in mapped)
    ran = [b for s in gc.calls.submits for b in s["tasks"].values()]
    assert sum(len(b) for b in ran) >= 8  # the runner's four and the map's four


def test_remote_map_reports_which_inputs_failed(gc):
    def maybe(x: int) -> int:
        if x % 2:
            raise ValueError(f"odd {x}")
        return x

    with pytest.raises(PartialFailure) as info:
        remote_map(maybe, [0, 1, 2, 3], endpoint=HERE)
    assert info.value.details["failed_indices"] == [1, 3]
    assert [r for r in info.value.results if isinstance(r, int)] == [0, 2]
    assert all(isinstance(e, RemoteExecutionError) and e.remote_type == "ValueError"
               for e in info.value.failures.values())


def test_retries_and_exceptions(gc, tmp_path):
    retried = remote_task(fails_once, endpoint=HERE, retries=1, retry_delay_seconds=0)
    failing = remote_task(fails, endpoint=HERE)

    @flow
    def twice() -> str:
        return retried(str(tmp_path / "marker"))

    state = twice(return_state=True)
    assert state.result() == "second attempt"
    assert max(r.run_count for r in task_runs(state.state_details.flow_run_id)) == 2

    @flow
    def failing_flow() -> None:
        failing(7)

    state = failing_flow(return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, RemoteExecutionError)
    assert exc.remote_type == "ValueError" and exc.message == "cannot handle 7"
    assert 'in fails\n    raise ValueError(f"cannot handle {x}")' in exc.remote_traceback


def test_timeout_stops_waiting_and_says_the_task_runs_on(gc):
    impatient_task = remote_task(slow, endpoint=HERE, timeout_seconds=1)

    @flow
    def impatient() -> str:
        return impatient_task(3)

    state = impatient(return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), TimeoutError)
    messages = flow_logs(state.state_details.flow_run_id)
    assert any("Globus Compute cannot cancel a submitted task" in m for m in messages)


@flow(name="gc-landed")
def landed(paths: list[str]) -> list[int]:
    return [v for v, _ in (gc_square(len(p)) for p in paths)]


def test_a_trigger_target_flow_runs_on_globus_compute(gc, tmp_path):
    store = StateStore(tmp_path / "s.db")
    starter = Starter("det", TargetConfig(kind="flow", flow="unused:landed",
                                          parameters={"paths": "{paths}"}),
                      store, 1, call=landed)
    run = Run(run_id=str(uuid.uuid4()), trigger="det", context={"paths": ["ab", "abc"]},
              state="queued", attempts=0, next_at=0.0, error=None, created_at=time.time())
    try:
        assert starter.start(run) == [4, 9]
    finally:
        starter.close()
        store.close()
