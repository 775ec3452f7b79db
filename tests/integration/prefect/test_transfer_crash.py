"""kill -9 of a flow process while its transfer step waits, then a rerun: the rerun
re-attaches to the transfer the dead run started instead of submitting another.
Two reruns: of the same flow run (the default key), and a new flow run with the
same explicit key."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from transfer_standin import TransferStandIn, active, succeeded

pytestmark = pytest.mark.prefect

SCRIPT = """
import json, sys
import globus_sdk
from prefect import flow, get_client
from prefect.context import FlowRunContext
from prefect.flow_engine import run_flow
from funcx_flows.prefect.transfer import transfer

@flow(name="crash-and-rerun")
def moving(url: str, key: str | None = None) -> dict:
    print("FLOW", FlowRunContext.get().flow_run.id, flush=True)
    return transfer("src-collection", "dst-collection", [("/detector/f1.h5", "/scratch/f1.h5")],
                    client=globus_sdk.TransferClient(base_url=url), key=key,
                    poll_interval_s=0.05)

mode, url, key, flow_run_id = sys.argv[1:5]
if mode == "new":
    result = moving(url, key or None)
else:  # execute an existing flow run again, as Prefect does when it reruns one
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    result = run_flow(moving, flow_run=flow_run, parameters=flow_run.parameters)
print("RESULT", json.dumps(result), flush=True)
"""


def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")  # end of output

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def read_until(lines: queue.Queue[str], prefix: str) -> tuple[str, list[str]]:
    seen = []
    while True:
        line = lines.get(timeout=120)
        if not line:
            raise AssertionError("the flow ended before " + prefix + ":\n" + "".join(seen))
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix):].strip(), seen


@pytest.fixture
def flow_env(prefect_server, home: Path, tmp_path_factory: pytest.TempPathFactory):
    from prefect.settings import get_current_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=str(get_current_settings().api.url),
               PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-home")),
               FUNCX_FLOWS_HOME=str(home))
    return env


@pytest.mark.parametrize("rerun", ["same flow run", "new flow run, same key"])
def test_a_rerun_after_kill_9_reattaches_to_the_running_transfer(flow_env, rerun):
    standin = TransferStandIn()
    key = "" if rerun == "same flow run" else "beamline-run-7"
    with standin.running():
        standin.plan(active())  # runs until the test lets it finish
        first, lines = start(flow_env, "new", standin.url, key, "-")
        try:
            flow_run_id, _ = read_until(lines, "FLOW ")
            standin.wait_for(lambda: any(t.polls >= 2 for t in standin.tasks.values()))
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        [task] = standin.created()
        standin.script(task.task_id, active(), succeeded())
        second, lines = start(flow_env, "again" if rerun == "same flow run" else "new",
                              standin.url, key, flow_run_id)
        try:
            result, output = read_until(lines, "RESULT ")
            assert second.wait(60) == 0
        finally:
            if second.poll() is None:
                second.kill()
                second.wait(30)
    assert json.loads(result)["task_id"] == task.task_id
    assert len(standin.created()) == 1
    assert standin.answers("POST", r"/transfer$") == [202]  # submitted once, by the first run
    assert not task.cancelled
    assert any(f"re-attaching to Globus transfer {task.task_id}" in line for line in output), \
        "".join(output)
