"""Service replicas (``--cluster``) on the tests' PostgreSQL behind HAProxy with
the repository's deploy/haproxy.cfg (TLS from a private CA, round-robin, one server
line per replica as docs/deploy.md says)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from pgurl import PG_URL
from pki import CA
from waiting import wait_until

from funcx_flows.localstack import LocalStack, stop_process
from funcx_flows.retry import RetryPolicy
from funcx_flows.sdk.client import Client

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    root: Path
    ca: CA
    replicas: list[Replica] = field(default_factory=list)
    proxy: subprocess.Popen[bytes] | None = None
    proxy_url: str = ""
    token: str = ""
    stack: LocalStack | None = None
    pg_url: str = PG_URL
    cluster: bool = True  # False: plain service processes (one alone, as before replicas)

    def start_replica(self, r: Replica) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCX_FLOWS_")}
        env["FUNCX_FLOWS_HOME"] = str(r.home)
        log = (r.home / "service.log").open("ab")
        r.proc = subprocess.Popen(
            [sys.executable, "-m", "funcx_flows.service", "--port", str(r.port),
             "--zmq-port", "0", "--database-url", self.pg_url,
             *(["--cluster"] if self.cluster else [])],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_until(lambda: self._ready(r), 60, f"replica on port {r.port} to be ready", 0.1)

    def _ready(self, r: Replica) -> bool:
        assert r.proc is not None
        if r.proc.poll() is not None:
            raise AssertionError(f"replica exited {r.proc.returncode}: "
                                 + (r.home / "service.log").read_text()[-3000:])
        with contextlib.suppress(Exception), Client(r.url, "x", home=r.home) as c:
            c._request("GET", "/health/ready")
            return True
        return False

    def client(self, replica: int | None = None, retry: RetryPolicy | None = None) -> Client:
        """Through the proxy, or straight to one replica."""
        if replica is None:
            return Client(self.proxy_url, self.token, home=self.root, retry=retry,
                          ca_bundle=str(self.ca.pem))
        return Client(self.replicas[replica].url, self.token, home=self.root, retry=retry)

    def holder_pid(self, endpoint_id: str) -> int:
        """The pid of the replica that holds the endpoint's link (its record)."""
        engine = sa.create_engine(self.pg_url)
        try:
            with engine.connect() as conn:
                name = conn.execute(sa.text(
                    "SELECT replica FROM endpoint_links WHERE endpoint_id = :e AND online"),
                    {"e": endpoint_id}).scalar_one()
        finally:
            engine.dispose()
        return int(str(name).rsplit(":", 1)[1])


def reset(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def haproxy_config(root: Path, replicas: list[Replica]) -> Path:
    """The repository's config with one server line per replica (as an operator
    adds them)."""
    text = (REPO / "deploy" / "haproxy.cfg").read_text()
    lines = "".join(f"    server service{i + 1} 127.0.0.1:{r.port}\n"
                    for i, r in enumerate(replicas) if i)
    path = root / "haproxy.cfg"
    path.write_text(text.rstrip("\n") + "\n" + lines)
    return path


def answers(c: Cluster) -> bool:
    with contextlib.suppress(Exception), c.client() as client:
        return bool(client.health())
    return False


@contextlib.contextmanager
def running_cluster(root: Path, replicas: int = 3, pg_url: str = PG_URL,
                    cluster: bool = True, workers: int = 2) -> Iterator[Cluster]:
    """``replicas`` replicas, the proxy, and endpoint ``ep`` linked through it."""
    reset(pg_url)
    c = Cluster(root, CA(root / "pki"), pg_url=pg_url, cluster=cluster)
    try:
        for i in range(replicas):
            home = root / f"replica{i + 1}"
            home.mkdir()
            c.replicas.append(Replica(home, free_port()))
        for r in c.replicas:  # one at a time: the first creates the user and its token
            c.start_replica(r)
        c.token = (c.replicas[0].home / "token").read_text().strip()
        cert = c.ca.issue("proxy", ["localhost"], ["127.0.0.1"])
        proxy_port = free_port()
        env = {**os.environ, "FUNCX_PROXY_BIND": f"127.0.0.1:{proxy_port}",
               "FUNCX_PROXY_CERT": str(cert.bundle),
               "FUNCX_SERVICE_1": f"127.0.0.1:{c.replicas[0].port}"}
        log = (root / "haproxy.log").open("ab")
        c.proxy = subprocess.Popen(["haproxy", "-db", "-f", str(haproxy_config(root, c.replicas))],
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        log.close()
        c.proxy_url = f"https://127.0.0.1:{proxy_port}"
        wait_until(lambda: answers(c), 30, "the proxy to answer", 0.1)
        c.stack = LocalStack(root / "user", env={
            "FUNCX_FLOWS_SERVICE_URL": c.proxy_url, "FUNCX_FLOWS_TOKEN": c.token,
            "FUNCX_FLOWS_CA_BUNDLE": str(c.ca.pem)})
        c.stack.start_endpoint("ep", {"max_workers_per_node": workers, "provider": "local",
                                      "heartbeat_period_s": 0.5, "heartbeat_threshold_s": 5,
                                      "link": "websocket"})
        yield c
    finally:
        if c.stack is not None:
            c.stack.stop()
        for r in c.replicas:
            if r.proc is not None and r.proc.poll() is None:
                stop_process(r.proc)
        if c.proxy is not None:
            stop_process(c.proxy)

