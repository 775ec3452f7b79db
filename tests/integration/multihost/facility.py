"""A facility on separate network hosts (namespaces): the service behind HAProxy on
``service`` (TLS on 443, a private CA), an endpoint on ``hpc`` and a trigger on
``instrument`` (each behind a site firewall that lets only port 443 out), users'
programs on ``client``. Only ``https://service.test`` is reachable from outside.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netns
import yaml
from guards import outlives_test
from pki import CA, ServerCert
from waiting import wait_until

REPO = Path(__file__).resolve().parents[3]
HOSTCMD = Path(__file__).with_name("hostcmd.py")
SERVICE_URL = "https://service.test"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FUNCX_FLOWS_", "PREFECT_"))}
    env.update(extra)
    return env


@dataclass
class Facility:
    net: netns.Network
    root: Path
    ca: CA
    cert: ServerCert
    service: netns.Host
    hpc: netns.Host
    client: netns.Host
    instrument: netns.Host
    wan: netns.Host
    token: str = ""
    service_proc: Any = None
    proxy_proc: Any = None
    endpoints: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------- service --

    def start_service(self) -> None:
        home = self.root / "service-home"
        info = home / "service" / "service.json"
        info.unlink(missing_ok=True)
        self.service_proc = self.service.popen(
            [sys.executable, "-m", "funcx_flows.service", "--host", "127.0.0.1",
             "--port", "8000", "--zmq-port", "0"],
            env=base_env(FUNCX_FLOWS_HOME=str(home)), log=self.root / "service.log")
        wait_until(lambda: info.exists() or self.service_proc.poll() is not None, 60,
                   "the service to start")
        assert self.service_proc.poll() is None, (self.root / "service.log").read_text()[-3000:]
        self.token = (home / "token").read_text().strip()

    def start_proxy(self) -> None:
        self.proxy_proc = self.service.popen(
            ["haproxy", "-db", "-f", str(REPO / "deploy" / "haproxy.cfg")],
            env=base_env(FUNCX_PROXY_BIND=f"{self.service.ip}:443",
                         FUNCX_PROXY_CERT=str(self.cert.bundle),
                         FUNCX_SERVICE_1="127.0.0.1:8000"),
            log=self.root / "haproxy.log")
        outlives_test(self.proxy_proc.pid)  # the facility ends it
        answer = self.on(self.client, "health", "60")
        assert answer["ok"], answer

    def stop_proxy(self) -> None:
        self.service.stop(self.proxy_proc)

    # ------------------------------------------------------------- hosts --

    def user_env(self, home: Path, **extra: str) -> dict[str, str]:
        """What a user on another host sets: the URL, a token, the facility's CA."""
        return base_env(**{"FUNCX_FLOWS_HOME": str(home), "FUNCX_FLOWS_SERVICE_URL": SERVICE_URL,
                           "FUNCX_FLOWS_TOKEN": self.token,
                           "FUNCX_FLOWS_CA_BUNDLE": str(self.ca.pem), **extra})

    def on(self, host: netns.Host, *args: str, timeout: float = 600,
           env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run a ``hostcmd`` command on ``host``; its JSON answer."""
        home = self.root / f"{host.name}-home"
        out = host.run([sys.executable, str(HOSTCMD), *args],
                       env=env or self.user_env(home), timeout=timeout)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
        answer: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return answer

    @contextlib.contextmanager
    def endpoint(self, name: str, config: dict[str, Any] | None = None) -> Iterator[str]:
        """An endpoint on ``hpc`` while the block runs; its id."""
        eid = self.start_endpoint(name, config)
        try:
            yield eid
        finally:
            self.hpc.stop(self.endpoints.pop(name))

    def start_on(self, host: netns.Host, *args: str) -> tuple[Any, Path]:
        """Start a ``hostcmd`` command on ``host`` in the background; ``answer`` reads it."""
        log = self.root / f"{host.name}-{args[0]}-{time.monotonic_ns()}.log"
        proc = host.popen([sys.executable, str(HOSTCMD), *args],
                          env=self.user_env(self.root / f"{host.name}-home"), log=log)
        return proc, log

    def answer(self, started: tuple[Any, Path], timeout: float = 600) -> dict[str, Any]:
        proc, log = started
        proc.wait(timeout)
        text = log.read_text()
        assert proc.returncode == 0, text[-4000:]
        answer: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
        return answer

    def start_endpoint(self, name: str, config: dict[str, Any] | None = None) -> str:
        """``funcx-endpoint start NAME --foreground`` on ``hpc``; its id once online."""
        home = self.root / "hpc-home"
        folder = home / "endpoints" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({
            "service_url": SERVICE_URL, "max_workers_per_node": 2,
            "heartbeat_period_s": 1, "heartbeat_threshold_s": 6, **(config or {})}))
        self.endpoints[name] = self.hpc.popen(
            [sys.executable, "-c", "from funcx_flows.endpoint.cli import main; main()",
             "start", name, "--foreground"],
            env=self.user_env(home), log=self.root / f"endpoint-{name}.log")
        answer = self.on(self.client, "online", name, "90")
        assert answer["ok"], (self.root / f"endpoint-{name}.log").read_text()[-3000:]
        return str(answer["endpoint_id"])

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text() if path.exists() else ""


def build(root: Path) -> tuple[netns.Network, Facility]:
    net = netns.Network()
    try:
        hosts = {name: net.host(name)
                 for name in ("service", "hpc", "client", "instrument", "wan")}
        net.resolve("service.test", hosts["service"])
        ca = CA(root / "pki")
        cert = ca.issue("service", ["service.test"])
        for name in ("hpc", "instrument"):
            hosts[name].only_outbound(443)
        return net, Facility(net, root, ca, cert, **hosts)
    except BaseException:
        net.close()
        raise
