"""Tasks tied to their client (``Executor(cancel_on_close_s=...)``): the service
cancels them when the client is gone, and not when its stream only reconnects."""

from __future__ import annotations

import subprocess
import sys
import time

from waiting import task_state, wait_until

from funcx_flows.sdk.executor import Executor

CHILD = """
import sys
from funcx_flows import Executor

def blocker(path):
    import os, time
    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"

ex = Executor(endpoint="ep", cancel_on_close_s=1)
futures = [ex.submit(blocker, sys.argv[1]) for _ in range(2)]
print(*[f.task_id for f in futures], flush=True)
[f.result() for f in futures]
"""


def blocker(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"


def test_the_tasks_of_a_killed_client_are_cancelled(stack, client, tmp_path):
    release = tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(release)],
                            env=stack.env,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        task_ids = proc.stdout.readline().split()
        assert len(task_ids) == 2
        wait_until(lambda: all(task_state(client, t) == "running" for t in task_ids),
                   120, "the tasks to run")
        proc.kill()
        proc.wait(10)
        wait_until(lambda: all(client.get_task(t)["state"] == "cancelled" for t in task_ids),
                   120, "the service to cancel the tasks of the killed client")
        error = client.get_task(task_ids[0])["error"]
        assert "result stream closed" in error["message"], error
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def test_a_stream_that_reconnects_keeps_its_tasks(endpoint, client, tmp_path):
    release = tmp_path / "release"
    with Executor(endpoint_id=endpoint.endpoint_id, client=client, cancel_on_close_s=1) as ex:
        try:
            future = ex.submit(blocker, str(release))
            # (not get_task: the future has its id before the submit thread sent it)
            wait_until(lambda: task_state(client, future.task_id) == "running", 120,
                       "the task to run")
            ex._stream._ws.close()  # the link drops; the stream reconnects by itself
            wait_until(lambda: ex._stream.reconnects >= 1 and ex._stream.wait_connected(0),
                       120, "the stream to reconnect")
            time.sleep(3)  # past the grace: a check blind to the reconnection cancels by now
            assert client.get_task(future.task_id)["state"] == "running"
        finally:
            release.touch()  # else the executor's exit waits for the body for ever
        assert future.result(timeout=60) == "released"
