"""What ``funcx-endpoint list`` and ``status`` show (endpoint/cliviews.py), and their
``--json``: through the real command on an endpoint folder with a status file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from funcx_flows.endpoint.cliviews import errors_not_shown, service_state

FAILED_BLOCK = {"block_id": "b1", "job_id": "", "state": "failed", "nodes": 1,
                "submitted_at": 0.0, "message": "sbatch: error: invalid partition 'gpu'"}
STATUS = {"workers_total": 0, "workers_busy": 0, "blocks": [FAILED_BLOCK],
          "recent_errors": ["block b1 could not start: sbatch: error: invalid partition "
                            "'gpu'", "12:00:01 manager m1 lost with 2 tasks"]}


def _cli(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNCX_FLOWS_HOME": str(home),
           "FUNCX_FLOWS_SERVICE_URL": "http://127.0.0.1:9"}  # nothing answers there
    return subprocess.run([sys.executable, "-m", "funcx_flows.endpoint.cli", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_online_with_no_capacity_is_not_just_online():
    assert service_state("online", STATUS).startswith("online, no capacity (block b1 failed")
    assert service_state("online", {**STATUS, "workers_total": 2}) == "online"
    assert service_state("online", {"workers_total": 0, "blocks": [
        {**FAILED_BLOCK, "state": "pending"}]}) == "online, starting a block"
    assert service_state("online", {"workers_total": 0, "blocks": []}) \
        == "online, no workers (blocks start on demand)"
    assert service_state("offline", STATUS) == "offline"
    assert service_state("online", None) == "online"  # nothing known locally


def test_a_failed_block_is_shown_once():
    assert errors_not_shown(STATUS) == ["12:00:01 manager m1 lost with 2 tasks"]


def test_status_prints_a_failed_block_once_and_json_for_scripts(home):
    assert _cli(home, "configure", "ep").returncode == 0
    (home / "endpoints" / "ep" / "status.json").write_text(json.dumps(STATUS))
    out = _cli(home, "status", "ep")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("sbatch: error") == 1, out.stdout
    assert "manager m1 lost" in out.stdout
    data = json.loads(_cli(home, "status", "ep", "--json").stdout)
    assert data == {"name": "ep", "running": False, "pid": None, "status": STATUS}
    listed = json.loads(_cli(home, "list", "--json").stdout)
    assert listed == {"endpoints": [{"name": "ep", "endpoint_id": None, "pid": None,
                                     "local": "stopped", "service": "not registered"}]}
