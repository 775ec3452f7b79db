"""A whole funcx-flows stack on this machine: a service and endpoints as real processes.

Used by ``funcx-flows demo``, the integration tests and the benchmarks. It drives
the parts only through their command lines and the REST API, exactly as a user
would, and it ends every process it started (and only those).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from funcx_flows.errors import FuncxFlowsError, ServiceUnavailable
from funcx_flows.retry import RetryPolicy, poll_until
from funcx_flows.sdk.client import Client

_ENDPOINT_CLI = "from funcx_flows.endpoint.cli import main; main()"


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str,
              proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    def ready() -> Any:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise ServiceUnavailable(f"{what}: process exited with {proc.returncode}\n{tail}")
        return predicate()

    value = poll_until(ready, timeout)
    if not value:
        tail = log.read_text()[-3000:] if log and log.exists() else ""
        raise ServiceUnavailable(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
    return value


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: the way every part is asked to stop."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class RunningEndpoint:
    name: str
    endpoint_id: str
    proc: subprocess.Popen[bytes]
    folder: Path


@dataclass
class LocalStack:
    """Start with ``start_service()`` and ``start_endpoint(name)``; end with ``stop()``.
    Its processes run in ``home`` (what a task writes to a relative path lands there,
    never in the caller's folder)."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    service_proc: subprocess.Popen[bytes] | None = None
    service_url: str = ""
    endpoints: dict[str, RunningEndpoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("FUNCX_FLOWS_")}
        base["FUNCX_FLOWS_HOME"] = str(self.home)
        base.update(self.env)
        self.env = base

    # ----------------------------------------------------------- service --

    def start_service(self, *extra_args: str, timeout: float = 60.0,
                      healthy: bool = True) -> str:
        """Start the service; wait until it answers /v1/health (unless ``healthy`` is
        False: a service that clients must not trust, in tests of TLS failures)."""
        info = self.home / "service" / "service.json"
        info.unlink(missing_ok=True)
        log = self.home / "service-stdout.log"
        log_file = log.open("ab")
        self.service_proc = subprocess.Popen(
            [sys.executable, "-m", "funcx_flows.service", "--port", "0", "--zmq-port", "0",
             *extra_args],
            env=self.env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.home,
        )
        log_file.close()

        def ready() -> str | None:
            try:
                data = json.loads(info.read_text())
            except (OSError, ValueError):
                return None
            if data.get("pid") != self.service_proc.pid:  # type: ignore[union-attr]
                return None
            return str(data["url"])

        self.service_url = _wait_for(ready, timeout, "the service to start", self.service_proc, log)
        if healthy:
            _wait_for(self._healthy, timeout, "the service to answer /v1/health",
                      self.service_proc, log)
        return self.service_url

    def _healthy(self) -> bool:
        try:
            return bool(self.client().health())
        except FuncxFlowsError:
            return False

    def restart_service(self, *, kill: bool = False) -> str:
        """Stop (or ``kill -9``) the service and start it again on the same ports,
        so that endpoints and clients find it where they left it."""
        info = json.loads((self.home / "service" / "service.json").read_text())
        http_port = info["url"].rsplit(":", 1)[1]
        zmq_port = info["zmq_url"].rsplit(":", 1)[1]
        if self.service_proc is not None:
            if kill:
                self.service_proc.kill()
                self.service_proc.wait(10)
            else:
                stop_process(self.service_proc)
        return self.start_service("--port", http_port, "--zmq-port", zmq_port)

    def kill_endpoint(self, name: str) -> None:
        """``kill -9`` an endpoint's daemon (its managers follow it)."""
        ep = self.endpoints.pop(name)
        ep.proc.kill()
        ep.proc.wait(10)

    def client(self, retry: RetryPolicy | None = None) -> Client:
        """A client of this stack's service, or of the one its env names (a proxy)."""
        return Client(self.env.get("FUNCX_FLOWS_SERVICE_URL") or None,
                      self.env.get("FUNCX_FLOWS_TOKEN") or None, home=self.home, retry=retry,
                      ca_bundle=self.env.get("FUNCX_FLOWS_CA_BUNDLE"))

    # ---------------------------------------------------------- endpoints --

    def endpoint_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _ENDPOINT_CLI, *args], env=self.env, capture_output=True,
            text=True, check=check, stdin=subprocess.DEVNULL, timeout=120, cwd=self.home,
        )

    def configure_endpoint(self, name: str, config: Mapping[str, Any] | None = None) -> Path:
        self.endpoint_cli("configure", name)
        folder = self.home / "endpoints" / name
        if config:
            path = folder / "config.yaml"
            data = yaml.safe_load(path.read_text()) or {}
            data.update(config)
            path.write_text(yaml.safe_dump(data))
        return folder

    def start_endpoint(self, name: str, config: Mapping[str, Any] | None = None,
                       timeout: float = 60.0, workers: bool = True) -> RunningEndpoint:
        """Start in the foreground and wait until online (and, with ``workers``,
        until it has workers)."""
        folder = self.home / "endpoints" / name
        if not (folder / "config.yaml").exists() or config:
            self.configure_endpoint(name, config)
        log = folder / "foreground.log"
        log_file = log.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-c", _ENDPOINT_CLI, "start", name, "--foreground"],
            env=self.env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.home,
        )
        log_file.close()

        def registered() -> str | None:
            try:
                return str(json.loads((folder / "endpoint.json").read_text())["endpoint_id"])
            except (OSError, ValueError, KeyError):
                return None

        endpoint_id = _wait_for(registered, timeout, f"endpoint {name} to register", proc, log)
        client = self.client()
        try:
            _wait_for(lambda: self._online(client, endpoint_id, workers), timeout,
                      f"endpoint {name} to come online", proc, log)
        finally:
            client.close()
        ep = RunningEndpoint(name, endpoint_id, proc, folder)
        self.endpoints[name] = ep
        return ep

    @staticmethod
    def _online(client: Client, endpoint_id: str, workers: bool = True) -> bool:
        try:
            status = client.get_endpoint_status(endpoint_id)
        except FuncxFlowsError:
            return False
        return status.get("state") == "online" and (
            not workers or int(status.get("workers_total") or 0) > 0)

    def stop_endpoint(self, name: str) -> None:
        ep = self.endpoints.pop(name, None)
        if ep is not None:
            stop_process(ep.proc)

    # --------------------------------------------------------------- all --

    def stop(self) -> None:
        for name in list(self.endpoints):
            self.stop_endpoint(name)
        if self.service_proc is not None:
            stop_process(self.service_proc)
            self.service_proc = None

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
