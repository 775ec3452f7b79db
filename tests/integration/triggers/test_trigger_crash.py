"""kill -9 of `funcx-flows trigger run` with Prefect flow targets: its temporary
Prefect server goes with it (a stale one is stopped by the next start), and the
runs it cut off are told apart: those that had finished are marked done, those
that never finished are the only ones `replay --interrupted` starts again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from waiting import wait_until

pytestmark = pytest.mark.prefect
CLI = "from funcx_flows.cli import main; main()"

# hold-*: the body's work is done and Prefect records Completed, then a hook of the
# user's never returns (the trigger never hears back); slow-*: cut off mid-body.
FLOWS = '''
import os, time
from pathlib import Path
from prefect import flow

OUT = Path({out!r})

def hold(flow, flow_run, state):
    if any("hold" in p for p in flow_run.parameters["paths"]):
        (OUT / ("held-" + str(flow_run.id))).touch()
        while True:
            time.sleep(1)

@flow(on_completion=[hold])
def record(paths):
    name = os.path.basename(paths[0])
    if name.startswith("slow"):
        (OUT / "slow-began").touch()
        while not (OUT / "release").exists():
            time.sleep(0.05)
    with open(OUT / "done.log", "a") as f:
        f.write(name + "\\n")
'''


class Triggers:
    """`funcx-flows trigger` commands on one config, as an operator runs them."""

    def __init__(self, tmp: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        self.env.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_LOGGING_LEVEL="WARNING",
                        PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.watched, self.out = tmp / "detector", tmp / "out"
        self.watched.mkdir()
        self.out.mkdir()
        flows = tmp / "crashflows.py"
        flows.write_text(FLOWS.format(out=str(self.out)))
        self.logs, self.starts = tmp, 0
        self.db = tmp / "state.db"
        self.records = tmp / "state.db.prefect-api"
        self.config = tmp / "triggers.yaml"
        self.config.write_text(yaml.safe_dump({"state_db": str(self.db), "triggers": [{
            "type": "files", "name": "det", "paths": [str(self.watched)], "settle_s": 0.2,
            "max_in_flight": 4, "target": {"flow": f"{flows}:record"}}]}))

    def start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        with open(self.logs / f"run-{self.starts}.log", "wb") as log:
            return subprocess.Popen([sys.executable, "-c", CLI, "trigger", "run",
                                     str(self.config)], env=self.env, stdout=log, stderr=log)

    def log(self) -> str:
        return (self.logs / f"run-{self.starts}.log").read_text()

    def server_of(self, proc: subprocess.Popen[bytes]) -> psutil.Process:
        """The temporary Prefect server ``proc`` wrote down once it was up."""
        record = self.records / f"{proc.pid}.json"
        wait_until(lambda: record.exists() or proc.poll() is not None, 180,
                   "the temporary Prefect server's record", detail=self.log)
        assert proc.poll() is None, self.log()
        return psutil.Process(json.loads(record.read_text())["server_pid"])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CLI, "trigger", *args, "--config",
                               str(self.config)], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def done(self) -> list[str]:
        log = self.out / "done.log"
        return log.read_text().splitlines() if log.exists() else []


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def reap(proc: psutil.Process) -> None:
    """Orphans re-parent to the test process (a subreaper, see conftest): reap them."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def test_kill_9_leaves_no_server_and_replays_only_unfinished_runs(tmp_path):
    t = Triggers(tmp_path)
    first = t.start()
    try:
        server = t.server_of(first)
        for name in ("hold-1.raw", "hold-2.raw", "hold-3.raw", "slow-1.raw"):
            (t.watched / name).write_bytes(b"x")
        wait_until(lambda: len(list(t.out.glob("held-*"))) == 3
                   and (t.out / "slow-began").exists(), 120, detail=lambda: t.done())
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        # The server dies with its owner: nothing else stops it here.
        wait_until(lambda: gone(server), 60, f"Prefect server {server.pid} to end with its owner")
        reap(server)
    finally:
        stop(first)

    second = t.start()
    try:
        frozen = t.server_of(second)
        wait_until(lambda: "trigger det started" in t.log(), 60, detail=lambda: t.log())
        status = t.cli("status")
        assert status.returncode == 0, status.stderr
        assert "never finished, safe to replay" in status.stdout, status.stdout
        assert "had finished" in status.stdout and "recorded its completion" in status.stdout
        # A server that cannot act on its owner's death (stopped here) outlives it ...
        frozen.send_signal(signal.SIGSTOP)
        wait_until(lambda: frozen.status() == psutil.STATUS_STOPPED, 30)
        second.send_signal(signal.SIGKILL)
        second.wait(30)
    finally:
        stop(second)
    assert not gone(frozen)

    third = t.start()  # ... until the next start stops it, after checking who it is
    try:
        t.server_of(third)
        wait_until(lambda: gone(frozen), 60, f"stale server {frozen.pid} to be stopped")
        reap(frozen)
        refused = t.cli("replay", str(t.watched / "hold-1.raw"))
        assert refused.returncode == 0 and "not queued: finished" in refused.stdout
        (t.out / "release").touch()
        replay = t.cli("replay", "--interrupted")
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout.count("queued run") == 1, replay.stdout
        wait_until(lambda: "slow-1.raw" in t.done(), 120, detail=lambda: t.done())
    finally:
        stop(third)
    assert third.returncode == 0, t.log()
    assert sorted(t.done()) == ["hold-1.raw", "hold-2.raw", "hold-3.raw", "slow-1.raw"]
