"""Ctrl-C or SIGTERM of a flow process (or of a script using an Executor) cancels
its remote tasks in flight, and Prefect records their task runs Crashed, not
Completed; after a kill -9 the service cancels them. The flows run in a child
process that gets the real signal; their remote bodies block until the test
releases them, so a process that waited for them would not end on its own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from prefectruns import task_runs
from waiting import wait_until

pytestmark = pytest.mark.usefixtures("stack")

CHILD = '''
import os, signal, sys
# as at a terminal (a shell may have started this test with SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
from prefect import flow, task
from prefect.runtime import flow_run
from funcx_flows import EndpointTaskRunner, Executor, remote_task

mode, folder = sys.argv[1], sys.argv[2]
if mode == "runner-killed":  # nothing in a killed process cancels: the service does
    import funcx_flows.prefect._remote
    funcx_flows.prefect._remote.ORPHAN_GRACE_S = 1


def blocker(i, folder):
    import os, time
    open(os.path.join(folder, f"started-{i}"), "w").close()
    while not os.path.exists(os.path.join(folder, "release")):
        time.sleep(0.05)
    return i


@task(name="held")
def held(i):
    return blocker(i, folder)


remote_held = remote_task(blocker, endpoint="ep", name="held")


@flow(task_runner=EndpointTaskRunner(endpoint="ep"))
def with_the_endpoint_runner():
    print("flow-run", flow_run.id, flush=True)
    return [f.result() for f in [held.submit(i) for i in range(2)]]


@flow  # Prefect's ThreadPoolTaskRunner
def with_prefects_threads():
    print("flow-run", flow_run.id, flush=True)
    return [f.result() for f in [remote_held.submit(i, folder) for i in range(2)]]


if mode == "executor":
    with Executor(endpoint="ep") as ex:
        futures = [ex.submit(blocker, i, folder) for i in range(2)]
        print("tasks", *[f.task_id for f in futures], flush=True)
        [f.result() for f in futures]
elif mode.startswith("runner"):
    with_the_endpoint_runner()
else:
    with_prefects_threads()
'''

TASK_ID = re.compile(r"as remote task ([0-9a-f-]{36})|^tasks (.*)$", re.M)


@pytest.mark.parametrize(("mode", "signum"), [
    ("runner", signal.SIGINT), ("runner", signal.SIGTERM),
    ("threads", signal.SIGINT), ("threads", signal.SIGTERM),
    ("executor", signal.SIGINT), ("runner-killed", signal.SIGKILL),
], ids=["runner-sigint", "runner-sigterm", "threads-sigint", "threads-sigterm",
        "executor-sigint", "runner-sigkill"])
def test_an_interrupted_flow_process_cancels_its_remote_tasks(stack, tmp_path, mode, signum):
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL

    script, out = tmp_path / "child.py", tmp_path / "child.out"
    script.write_text(CHILD)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "FUNCX_FLOWS_HOME": str(stack.home)}
    with out.open("w") as log:
        proc = subprocess.Popen([sys.executable, str(script), mode, str(tmp_path)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: all((tmp_path / f"started-{i}").exists() for i in range(2)), 120,
                   "both remote bodies to start", proc=proc)
        proc.send_signal(signum)
        try:
            proc.wait(timeout=120)  # without cancelling, it would wait for the bodies
        except subprocess.TimeoutExpired:
            pytest.fail(f"the child did not end after signal {signum}:\n{out.read_text()}")
        text = out.read_text()
        assert "did not record their cancellation" not in text, text
        task_ids = [t for m in TASK_ID.finditer(text) for t in (m[1] or m[2] or "").split()]
        assert len(task_ids) == 2, text
        client = stack.client()
        try:  # cancelled on the service (they would never end otherwise: not yet released)
            wait_until(lambda: all(client.get_task(t)["state"] == "cancelled"
                                   for t in task_ids), 120, "the remote tasks to be cancelled")
        finally:
            client.close()
    finally:
        (tmp_path / "release").touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if mode in ("runner", "threads"):  # a killed process reports nothing to Prefect
        flow_run_id = re.search(r"^flow-run (\S+)$", text, re.M)[1]
        states = [r.state.type for r in task_runs(flow_run_id) if r.name.startswith("held")]
        assert len(states) == 2 and set(states) <= {StateType.CRASHED, StateType.CANCELLED}, \
            (states, text)
