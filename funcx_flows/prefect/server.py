"""One temporary Prefect API for a process that runs flows concurrently.

Without ``PREFECT_API_URL``, each flow run may try to start Prefect's ephemeral
server; concurrent first runs race for its port, and the losers' servers can
outlive the process. Whoever starts flows from several threads (the trigger
runner, the demo) opens one server here first, and closes it at the end.

The server is a process of its own, tethered to its owner (``api_process``): it
ends when the owner dies, even by kill -9. Given a ``records`` folder, the owner
also writes down who the server is (pid and start time, its own too); the next
owner to start there stops a server whose owner is gone but which is still alive
(frozen, stopped), after checking that it is that very process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from funcx_flows.errors import ServiceUnavailable
from funcx_flows.retry import RetryPolicy, poll_until

MODULE = "funcx_flows.prefect.api_process"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prefect_api(timeout: int = 120, records: Path | None = None) -> Iterator[str]:
    """Yield the API URL: the configured one, or a temporary server's."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    if records is not None:
        reap_stale(records)
    server = TemporaryServer.start(timeout)
    record = server.write_record(records) if records is not None else None
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        _reload_settings()
        _warm_up()
        yield server.api_url
    finally:
        _drain()
        os.environ.pop("PREFECT_API_URL", None)
        _reload_settings()
        server.stop()
        if record is not None:
            record.unlink(missing_ok=True)


@dataclass
class TemporaryServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start(cls, timeout: float) -> TemporaryServer:
        """Start it and wait until it answers; another port if one was taken meanwhile."""
        from prefect.settings import get_current_settings

        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
        deadline = time.monotonic() + timeout
        for _ in range(3):
            port = _free_port()
            cmd = [sys.executable, "-m", MODULE, "--owner", str(os.getpid()), "--port", str(port)]
            if threading.current_thread() is threading.main_thread():
                cmd.append("--death-signal")
            server = cls(subprocess.Popen(cmd, env=env), port)
            if server._wait_healthy(deadline):
                return server
            if server.process.poll() is None:  # still starting at the deadline
                server.stop()
                raise ServiceUnavailable(f"the temporary Prefect API did not answer within "
                                         f"{timeout:.0f} s")
        raise ServiceUnavailable(f"the temporary Prefect API exited while starting (exit code "
                                 f"{server.process.returncode}; see its output above)")

    def _wait_healthy(self, deadline: float) -> bool:
        with httpx.Client(timeout=5) as client:
            def answered_or_exited() -> bool:
                if self.process.poll() is not None:
                    return True  # no use waiting (told apart below)
                with contextlib.suppress(httpx.TransportError):
                    return client.get(f"{self.api_url}/health").status_code == 200
                return False

            done = poll_until(answered_or_exited, deadline - time.monotonic())
            return bool(done) and self.process.poll() is None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def write_record(self, records: Path) -> Path:
        """Who the server and its owner are, for the next owner to check (see ``reap_stale``)."""
        records.mkdir(parents=True, exist_ok=True)
        me = psutil.Process()
        data = {"server_pid": self.process.pid,
                "server_started": psutil.Process(self.process.pid).create_time(),
                "owner_pid": me.pid, "owner_started": me.create_time(), "url": self.api_url}
        path = records / f"{me.pid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        return path


def _same_process(pid: int, started: float) -> psutil.Process | None:
    """The process ``pid`` if it is still the one that started at ``started`` (pids are reused)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None


def reap_stale(records: Path) -> list[int]:
    """Stop temporary servers whose owner died and which are still running; returns their pids.

    A server is stopped only if its record says so and the process is that very
    server (same pid, same start time, our module on its command line); a record of
    a live owner (another trigger process, say) is left alone."""
    stopped: list[int] = []
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
            owner = _same_process(int(rec["owner_pid"]), float(rec["owner_started"]))
            server = _same_process(int(rec["server_pid"]), float(rec["server_started"]))
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: it can tell us nothing
            continue
        if owner is not None:
            continue
        if server is not None and MODULE in " ".join(_cmdline(server)):
            _end(server)
            stopped.append(server.pid)
        path.unlink(missing_ok=True)
    return stopped


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return list(proc.cmdline())
    except psutil.Error:
        return []


def _end(proc: psutil.Process) -> None:
    """SIGTERM (with SIGCONT, so that a stopped process acts on it), SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
            if sig == signal.SIGTERM:
                proc.send_signal(signal.SIGCONT)
        if poll_until(lambda: _gone(proc), 10):
            return


def _gone(proc: psutil.Process) -> bool:
    """Exited (a zombie too: its parent, not us, reaps it)."""
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def _drain() -> None:
    """Logs and events still queued in this process reach the API before it stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _reload_settings() -> None:
    """Prefect reads the environment once, at import (and importing this package
    imports Prefect); threads without a settings context of their own use that copy.
    Rebuilt, it points them all at this API instead of a private ephemeral server each."""
    import prefect.context

    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if refresh is not None:
        refresh()
    else:  # older Prefect: the same, by hand
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.root_settings_context()


def _warm_up() -> None:
    """One trivial flow run first: a new API's first requests are slow to answer."""
    from prefect import flow

    from funcx_flows.prefect.flowruns import without_heartbeats

    @flow(name="funcx-flows-warm-up")
    def warm_up() -> int:
        return 1

    policy = RetryPolicy(initial=1.0, multiplier=1.5, max_delay=5.0, max_attempts=4)
    for delay in [*policy.delays(), None]:
        try:
            with without_heartbeats():
                warm_up()
            return
        except RuntimeError:
            if delay is None:
                return  # (flow runs will say what is wrong)
            policy.sleep(delay)
