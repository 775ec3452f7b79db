"""SQLite serves one service process: a second on the same database is refused with
a message that says why and what to use instead; PostgreSQL takes several."""

from __future__ import annotations

import subprocess
import sys

from funcx_flows.localstack import LocalStack


def test_a_second_service_on_the_same_sqlite_database_is_refused(tmp_path):
    stack = LocalStack(tmp_path / "home")
    try:
        stack.start_service()
        second = subprocess.run(
            [sys.executable, "-m", "funcx_flows.service", "--port", "0", "--zmq-port", "0"],
            env=stack.env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        assert f"another service process (pid {stack.service_proc.pid})" in second.stderr
        assert "SQLite serves one process" in second.stderr and "PostgreSQL" in second.stderr
        assert stack.client().health()["status"] == "ok"  # the first goes on
    finally:
        stack.stop()
    # once it stopped, the database is free again
    again = LocalStack(tmp_path / "home")
    try:
        again.start_service()
    finally:
        again.stop()


def test_cluster_mode_on_sqlite_is_refused_with_a_reason(tmp_path):
    env = LocalStack(tmp_path / "home").env
    run = subprocess.run(
        [sys.executable, "-m", "funcx_flows.service", "--port", "0", "--cluster"],
        env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "cluster needs a PostgreSQL database_url" in run.stderr
