"""Remote task bodies behave like local ones: the same flows run under Prefect's
ThreadPoolTaskRunner (bodies in this process) and with their bodies on a real
endpoint (EndpointTaskRunner, remote_task), against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import allow_failure, quote, unmapped
from prefectruns import flow_log_records, flow_logs, task_runs

from funcx_flows import EndpointTaskRunner, remote_task
from funcx_flows.errors import RemoteExecutionError

pytestmark = pytest.mark.usefixtures("stack")


def _runners():
    return {"threads": ThreadPoolTaskRunner(), "endpoint": EndpointTaskRunner(endpoint="ep")}


# ------------------------------------------------------------- annotations --

@task
def boom():
    raise ValueError("upstream failed")


@task
def after(x=None, y=0):
    return "ran" if x is None else f"got {type(x).__name__}: {x} ({y})"


@task
def echo(value):
    return value


def annotated():
    up = boom.submit()
    waited = after.submit(wait_for=[allow_failure(up)])
    given = after.submit(allow_failure(up), y=1)
    nested = after.submit({"upstream": allow_failure(up)}, y=2)
    quoted = echo.submit(quote((1, 2)))
    mapped = after.map([allow_failure(up), None], y=unmapped(3),
                       wait_for=[allow_failure(up)])
    return (waited.result(), given.result(), nested.result(), quoted.result(),
            [f.result() for f in mapped])


def test_annotations_in_wait_for_and_parameters_behave_as_under_threads():
    out = {name: flow(annotated, task_runner=runner)() for name, runner in _runners().items()}
    assert out["endpoint"] == out["threads"]
    assert out["threads"][:2] == ("ran", "got ValueError: upstream failed (1)")
    assert out["threads"][4] == ["got ValueError: upstream failed (3)", "ran"]


# -------------------------------------------------------------- exceptions --

class Upset(Exception):
    """A class of this test module: it travels by value with the function."""

    def __init__(self, message, severity=1):
        super().__init__(message)
        self.severity = severity


def test_the_original_exception_type_reaches_except_retries_and_the_state():
    calls = []

    def only_upsets(task, task_run, state):
        try:
            state.result()
        except Upset as exc:
            calls.append(exc.severity)
            return True
        return False

    @task(retries=1, retry_delay_seconds=0, retry_condition_fn=only_upsets)
    def picky(x):
        raise Upset(f"negative: {x}", severity=abs(x))

    def body():
        try:
            picky.submit(-3).result()
        except Upset as exc:
            return f"caught {type(exc).__name__}: {exc}"
        return "not caught"

    seen = {}
    for name, runner in _runners().items():
        calls.clear()
        seen[name] = (flow(body, task_runner=runner)(), list(calls))
    assert seen["endpoint"] == seen["threads"] == ("caught Upset: negative: -3", [3])

    @flow
    def lets_it_raise():
        return fails_remotely(7)

    with pytest.raises(Upset, match=r"^cannot handle 7$") as info:
        lets_it_raise()
    cause = info.value.__cause__
    assert isinstance(cause, RemoteExecutionError) and "in fails_remotely" in cause.remote_traceback
    state = lets_it_raise(return_state=True)
    assert state.is_failed() and "Upset: cannot handle 7" in (state.message or "")


@remote_task(endpoint="ep")
def fails_remotely(x):
    raise Upset(f"cannot handle {x}")


# ----------------------------------------------------------------- logging --

@task
def chatty(n):
    import logging

    from prefect import get_run_logger

    print("printed first")
    logging.getLogger("beamline.io").warning("stdlib warning %d", n)
    get_run_logger().info("run logger info %d", n)
    logging.getLogger("beamline.io").info("stdlib info %d", n)
    get_run_logger().debug("run logger debug %d", n)  # below the task run's level
    print("printed last")
    return n


def _chatty_logs(records, n):
    # (ends with: " 5" is also in "... as remote task 5cc2...", one task id in 16)
    return [(level, message) for level, message in records if message.endswith(f" {n}")
            or "printed" in message]


def test_prints_and_log_records_reach_the_task_run_log_in_order_with_levels(stack):
    @flow(task_runner=EndpointTaskRunner(endpoint="ep"))
    def logged():
        return chatty.submit(5).result()

    state = logged(return_state=True)
    assert state.result() == 5
    assert _chatty_logs(flow_log_records(state.state_details.flow_run_id), 5) == [
        (20, "(remote) printed first"),
        (30, "(remote beamline.io) stdlib warning 5"),
        (20, "run logger info 5"),
        (20, "(remote beamline.io) stdlib info 5"),
        (20, "(remote) printed last"),
    ]
    # the block log names the task and the function, not "manager"
    lines = [line for path in stack.endpoints["ep"].folder.rglob("block-*.log")
             for line in path.read_text().splitlines() if "stdlib warning 5" in line]
    assert lines and all("chatty" in line and ", task " in line and "manager:" not in line
                         for line in lines), lines
    # and Prefect's own CLI shows the prefix (Rich took "[remote]" for markup)
    from prefect.settings import PREFECT_API_URL

    run = next(r for r in task_runs(state.state_details.flow_run_id)
               if r.name.startswith("chatty"))
    shown = subprocess.run(
        [sys.executable, "-m", "prefect", "task-run", "logs", str(run.id)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())})
    assert "(remote) printed first" in shown.stdout, shown.stdout + shown.stderr
    assert "(remote) printed last" in shown.stdout


# ----------------------------------------------------------------- runtime --

@task(tags=["beamline", "gpu"], task_run_name="introspect-{x}")
def introspect(x, y=5):
    from prefect import get_run_logger
    from prefect.runtime import flow_run, task_run

    get_run_logger().info("introspecting %s", x)
    return {"task_run_id": task_run.id, "flow_run_id": flow_run.id, "name": task_run.name,
            "task_name": task_run.task_name, "tags": sorted(task_run.tags),
            "parameters": task_run.parameters, "flow_name": flow_run.flow_name}


def runtime_flow():
    from prefect.runtime import flow_run

    future = introspect.submit(4)
    return future.result(), str(future.task_run_id), flow_run.id


def test_prefect_runtime_and_get_run_logger_in_the_body_as_in_a_local_run():
    for name, runner in _runners().items():
        seen, task_run_id, flow_run_id = flow(runtime_flow, name="runtime-flow",
                                              task_runner=runner)()
        assert seen == {"task_run_id": task_run_id, "flow_run_id": flow_run_id,
                        "name": "introspect-4", "task_name": "introspect",
                        "tags": ["beamline", "gpu"], "parameters": {"x": 4, "y": 5},
                        "flow_name": "runtime-flow"}, name
        assert "introspecting 4" in flow_logs(flow_run_id), name


# ------------------------------------------------------------ the warning --

@remote_task(endpoint="ep", timeout_seconds=120)
def timed_remote(x):
    return x


@task(timeout_seconds=120)
def timed_local(x):
    return x


def test_no_worker_thread_timeout_warning_for_timed_remote_tasks():
    @flow
    def timed():
        futures = [timed_remote.submit(1), *timed_remote.map([2, 3])]
        local = timed_local.submit(4)
        return [f.result() for f in futures], local.result()

    state = timed(return_state=True)
    assert state.result() == ([1, 2, 3], 4)
    warned = [m for m in flow_logs(state.state_details.flow_run_id)
              if "running in a worker thread" in m]
    assert len(warned) == 1, warned  # the local task's, which a thread cannot interrupt
