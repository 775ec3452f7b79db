"""The full path across hosts: users on ``client`` and ``instrument`` run functions on
``hpc`` through the service's one TLS port; ``hpc`` and ``instrument`` let only
port 443 out."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def test_the_site_firewalls_hold(facility):
    """What the other tests rely on: from hpc only 443 goes out, and nothing comes in."""
    probe = ("import socket, sys\n"
             "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
             "    print('open')\nexcept OSError as e:\n    print('closed', e)\n")
    # the service's plain HTTP port is not exposed: only the proxy's 443
    assert facility.hpc.run([sys.executable, "-c", probe, "service.test", "443"]
                            ).stdout.startswith("open")
    for port in ("8000", "80", "22"):
        assert facility.hpc.run([sys.executable, "-c", probe, "service.test", port]
                                ).stdout.startswith("closed")
    server = facility.hpc.popen([sys.executable, "-m", "http.server", "8080", "--bind",
                                 facility.hpc.ip])
    try:
        time.sleep(0.5)  # (a refusal or a timeout both show as closed; open is what matters)
        assert facility.client.run([sys.executable, "-c", probe, facility.hpc.ip, "8080"]
                                   ).stdout.startswith("closed")
    finally:
        facility.hpc.stop(server)


def test_the_service_sees_the_clients_address_through_the_proxy(facility):
    """X-Forwarded-For from the proxy is believed: a refused token is logged with the
    client host's address, not the proxy's."""
    env = facility.user_env(facility.root / "client-home", FUNCX_FLOWS_TOKEN="fxf_wrong")
    probe = ("from funcx_flows.sdk.client import Client\n"
             "from funcx_flows.errors import AuthenticationError\n"
             "try:\n    Client().whoami()\nexcept AuthenticationError as e:\n    print(e)\n")
    out = facility.client.run([sys.executable, "-c", probe], env=env)
    assert "invalid or revoked token" in out.stdout, out
    assert f"refused a request from {facility.client.ip}" in facility.log("service.log")


def test_an_executor_on_client_runs_on_hpc_through_one_tls_port(facility):
    with facility.endpoint("hpc-ep") as eid:
        answer = facility.on(facility.client, "run", eid, "500")
    assert answer["ok"] and answer["n"] == 500, answer
    log = facility.log("endpoint-hpc-ep.log")
    assert "Traceback" not in log, log[-3000:]


def test_a_prefect_flow_on_client_runs_its_remote_tasks_on_hpc(facility):
    with facility.endpoint("hpc-flow"):
        answer = facility.on(facility.client, "flow", "hpc-flow")
    assert answer["values"] == [i * i for i in range(8)], answer


def test_a_file_on_instrument_starts_a_flow_whose_step_runs_on_hpc(facility):
    with facility.endpoint("hpc-beamline"):
        _beamline(facility)


def _beamline(facility) -> None:
    root = facility.root / "beamline"
    watched, summaries = root / "detector", root / "summaries"
    watched.mkdir(parents=True)
    config = root / "triggers.yaml"
    config.write_text(yaml.safe_dump({
        "state_db": str(root / "state.db"),
        "triggers": [{
            "type": "files", "name": "detector", "paths": [str(watched)],
            "patterns": ["*.raw"], "settle_s": 0.2, "close_settle_s": 0,
            "batch_size": 1, "batch_window_s": 0,
            "target": {"kind": "flow",
                       "flow": str(facility.root.parent / "flows" / "beamline.py") + ":beamline",
                       "parameters": {"paths": "{paths}", "endpoint": "hpc-beamline",
                                      "publish_dir": str(summaries)}}}]}))
    flows = facility.root.parent / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "beamline.py").write_text((REPO / "flows_examples" / "beamline.py").read_text())
    home = facility.root / "instrument-home"
    trigger = facility.instrument.popen(
        [sys.executable, "-c", "from funcx_flows.cli import main; main()", "trigger", "run",
         str(config)], env=facility.user_env(home), log=facility.root / "trigger.log")
    try:  # (files that arrive before its first scan are found by it)
        for i in range(3):
            (watched / f"frame_{i}.raw").write_bytes(bytes(range(256)) * (i + 1))
        deadline = time.monotonic() + 120
        while len(list(summaries.glob("*.json"))) < 3 and time.monotonic() < deadline:
            assert trigger.poll() is None, facility.log("trigger.log")[-3000:]
            time.sleep(0.2)
        done = sorted(summaries.glob("*.json"))
        assert len(done) == 3, facility.log("trigger.log")[-3000:]
        frames = [yaml.safe_load(p.read_text())["frames"] for p in done]
        assert frames == [1, 1, 1]
    finally:
        facility.instrument.stop(trigger)
