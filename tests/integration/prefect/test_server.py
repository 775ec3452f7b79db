"""``prefect_api``: every thread's flow runs go to the one temporary API it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.prefect

# In a fresh process, as the trigger CLI and the demo use it: Prefect is imported
# (by funcx_flows.prefect) before the API exists, and flows run on other threads.
SCRIPT = """
import json, threading
import prefect.server.api.server as server
from funcx_flows.prefect.server import prefect_api
from prefect import flow, get_client
from prefect.settings import get_current_settings

started = []
start = server.SubprocessASGIServer.start
def counting_start(self, *args, **kwargs):
    started.append(self.port)
    return start(self, *args, **kwargs)
server.SubprocessASGIServer.start = counting_start

@flow(name="from-a-thread")
def from_a_thread() -> int:
    return 1

with prefect_api() as url:
    seen = []
    t = threading.Thread(target=lambda: (seen.append(get_current_settings().api.url),
                                         from_a_thread()))
    t.start()
    t.join()
    with get_client(sync_client=True) as client:
        names = [r.name for r in client.read_flow_runs()]
print(json.dumps({"url": url, "seen": seen, "servers": len(started), "runs": len(names)}))
"""


def test_flows_on_other_threads_use_the_one_temporary_api(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["seen"] == [got["url"]]
    assert got["servers"] == 0  # no private ephemeral server of Prefect's started by a flow run
    assert got["runs"] == 2  # the warm-up run and the thread's run, both on this API
    assert "Error logging to API" not in out.stderr
