"""`funcx-flows trigger run|status|replay` as an operator runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import yaml
from waiting import wait_until

CLI = "from funcx_flows.cli import main; main()"


def cli(env, *args, check=False):
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_run_status_replay_and_bad_config(tmp_path, home):
    import os

    env = {**os.environ, "FUNCX_FLOWS_HOME": str(home)}
    watched = tmp_path / "detector"
    watched.mkdir()
    out = tmp_path / "started.log"
    handlers = tmp_path / "handlers.py"
    handlers.write_text(
        "def record(paths, label):\n"
        f"    with open({str(out)!r}, 'a') as f:\n"
        "        for p in paths:\n"
        "            f.write(label + ' ' + p + '\\n')\n")
    config = tmp_path / "triggers.yaml"
    config.write_text(yaml.safe_dump({"triggers": [{
        "type": "files", "name": "det", "paths": [str(watched)], "settle_s": 0.2,
        "target": {"flow": f"{handlers}:record",
                   "parameters": {"paths": "{paths}", "label": "run {batch_id}"}}}]}))
    proc = subprocess.Popen([sys.executable, "-c", CLI, "trigger", "run", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        (watched / "frame1.raw").write_bytes(b"x")
        wait_until(lambda: out.exists() and "frame1.raw" in out.read_text(), 30)
        second = cli(env, "trigger", "run", str(config))  # would start everything twice
        assert second.returncode != 0 and "already being served" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("run ")
    status = cli(env, "trigger", "status")
    assert "det" in status.stdout and status.returncode == 0
    replay = cli(env, "trigger", "replay", str(watched / "frame1.raw"))
    assert replay.returncode == 0 and "queued run" in replay.stdout
    shown = cli(env, "trigger", "status").stdout
    assert "queued" in shown and "interrupted" in shown and "frame1.raw" in shown
    import json

    doc = json.loads(cli(env, "trigger", "status", "--json").stdout)
    assert doc["triggers"]["det"]["runs"].get("queued") == 1
    assert [r["state"] for r in doc["not_done"]] == ["queued"]
    assert str(watched / "frame1.raw") in doc["not_done"][0]["context"]["paths"]
    missing = cli(env, "trigger", "replay", "/no/such/file")
    assert missing.returncode != 0 and "no run of a file" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"triggers": [{"type": "files", "name": "x", "paths": ["/d"],
                                                 "setle_s": 1, "target": {"flow": "m:f"}}]}))
    result = cli(env, "trigger", "run", str(bad))
    assert result.returncode != 0 and "setle_s" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_starts_prefect_flows_with_one_api_and_leaves_nothing(tmp_path, home):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(FUNCX_FLOWS_HOME=str(home), PREFECT_HOME=str(tmp_path / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    watched = tmp_path / "detector"
    watched.mkdir()
    out = tmp_path / "flow.log"
    handlers = tmp_path / "pflows.py"
    handlers.write_text(
        "from prefect import flow\n\n"
        "@flow\n"
        "def record(paths):\n"
        f"    with open({str(out)!r}, 'a') as f:\n"
        "        f.write(' '.join(paths) + '\\n')\n")
    config = tmp_path / "triggers.yaml"
    config.write_text(yaml.safe_dump({"triggers": [{
        "type": "files", "name": "det", "paths": [str(watched)], "settle_s": 0.2,
        "max_in_flight": 3, "target": {"flow": f"{handlers}:record"}}]}))
    proc = subprocess.Popen([sys.executable, "-c", CLI, "trigger", "run", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        for i in range(4):
            (watched / f"f{i}.raw").write_bytes(b"x")
        wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 4, 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    # quiet at INFO: our own lines, not Prefect's nor httpx's (they come with -v)
    noisy = [ln for ln in err.splitlines()
             if (" INFO " in ln and not ln.split(" INFO ", 1)[1].startswith("funcx_flows"))
             or "| INFO" in ln]
    assert not noisy, "\n".join(noisy[:20])
    assert "serving 1 trigger(s)" in err
