"""A real `funcx-flows trigger run` serving a Globus trigger, killed with SIGKILL in the
middle of a 1,200-transfer burst and started again: nothing lost, nothing fired twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from globus_standin import DEST, fired_tasks
from waiting import wait_until

CLI = "from funcx_flows.cli import main; main()"


def run_states(db_path: Path) -> dict[str, int]:
    if not db_path.exists():
        return {}
    db = sqlite3.connect(db_path)
    try:
        return dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        db.close()


def floor_set(db_path: Path) -> bool:
    if not db_path.exists():
        return False
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT 1 FROM marks WHERE key='floor'").fetchone() is not None
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


def test_kill_9_during_a_burst_and_a_restart_lose_and_repeat_nothing(standin, tmp_path, home):
    standin.files_delay_s = 0.003  # Transfer is not instant: the burst takes a while
    started = tmp_path / "started.log"
    handlers = tmp_path / "handlers.py"
    handlers.write_text(
        "import os\n\n"
        "def record(task_id, files):\n"
        f"    fd = os.open({str(started)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
        "    os.write(fd, (task_id + '\\n').encode())\n"
        "    os.close(fd)\n")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"access_token": "user-token"}))
    state = tmp_path / "state.db"
    config = tmp_path / "triggers.yaml"
    config.write_text(yaml.safe_dump({"state_db": str(state), "triggers": [{
        "type": "globus", "name": "landed", "destination_endpoint": DEST,
        "path_prefix": "/beamline/", "poll_interval_s": 0.2, "overlap_s": 60,
        "transfer_url": standin.url, "auth": {"token_file": str(tokens)},
        "target": {"flow": f"{handlers}:record"}}]}))
    env = {**os.environ, "FUNCX_FLOWS_HOME": str(home)}

    def serve() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", CLI, "trigger", "run", str(config)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    proc = serve()
    try:
        wait_until(lambda: floor_set(state), 60)  # started: its start point is fixed
        now = time.time()
        burst = [standin.add(completed=now + 0.2, requested=now - 300 + i // 4,
                             files=[f"/beamline/b{i}.h5"]) for i in range(1200)]
        elsewhere = [standin.add(completed=now + 0.2, files=[f"/home/x{i}.h5"])
                     for i in range(20)]
        wait_until(lambda: started.exists() and
                   len(started.read_text().splitlines()) >= 300, 120)
        proc.kill()  # SIGKILL, mid-burst
        proc.wait(30)
        at_kill = sum(run_states(state).values())
        assert at_kill < len(burst), "the burst was over before the kill"
        while_down = [standin.add(files=[f"/beamline/d{i}.h5"]) for i in range(200)]
        expected = burst + while_down
        proc = serve()

        def settled() -> bool:
            states = run_states(state)
            return (sum(states.values()) == len(expected)
                    and states.get("queued", 0) == states.get("running", 0) == 0)

        wait_until(settled, 120, detail=lambda: run_states(state))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert sorted(fired_tasks(state)) == sorted(expected)  # none lost, none twice
    starts = started.read_text().splitlines()
    states = run_states(state)
    assert len(starts) == len(set(starts)) and not set(starts) & set(elsewhere)
    # runs cut off by the kill are "interrupted" (an in-process flow may have done its
    # work), shown and replayable, never started twice behind the operator's back
    assert states.get("interrupted", 0) <= 4
    assert len(starts) >= len(expected) - states.get("interrupted", 0)
    assert "Traceback" not in err
