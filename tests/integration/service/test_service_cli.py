"""``funcx-flows service start|stop`` as an operator meets them: a busy port is one
line naming it, and ``stop && start`` on the same ports works."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _cli(home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNCX_FLOWS_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", "from funcx_flows.cli import main; main()",
                           *args], env=env, capture_output=True, text=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_busy_http_or_zeromq_port_is_one_line_naming_it(home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag, where in (("--port", f"127.0.0.1:{port}"),
                            ("--zmq-port", f"tcp://127.0.0.1:{port}")):
            out = _cli(home, "service", "start", "--port", "0", flag, str(port))
            assert out.returncode == 1, out.stderr
            assert where in out.stderr and "in use" in out.stderr, out.stderr
            assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1, \
                out.stderr


def test_stop_returns_once_the_process_is_gone_and_start_reuses_the_ports(home):
    http, zmq_port = _free_port(), _free_port()
    args = ("service", "start", "--port", str(http), "--zmq-port", str(zmq_port))
    assert _cli(home, *args).returncode == 0
    pid = json.loads((home / "service" / "service.json").read_text())["pid"]
    try:
        status = json.loads(_cli(home, "service", "status", "--json").stdout)
        assert status["pid"] == pid and status["answers"] is True
        assert status["url"].endswith(f":{http}") and status["zmq_url"].endswith(f":{zmq_port}")
        out = _cli(home, "service", "stop")
        assert out.returncode == 0 and "stopped" in out.stdout, out.stderr
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone (or a zombie)
        again = _cli(home, *args)
        assert again.returncode == 0, again.stderr
    finally:
        _cli(home, "service", "stop")
