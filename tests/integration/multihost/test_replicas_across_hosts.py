"""Replicas on separate hosts: PostgreSQL on ``db``, one service replica on each of
``svc1`` and ``svc2`` (``--cluster``), HAProxy on ``service`` (https://service.test,
the repository's config with a server line per replica), the endpoint on ``hpc``
behind its site firewall (only 443 out), users on ``client``. The replica that holds
the endpoint's link is killed (-9) mid-run: nothing is lost."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns
import pytest
from facility import REPO, Facility, base_env
from privatepg import PrivatePostgres, binaries
from waiting import wait_until

PORT = 8000


def _reachable(host: netns.Host, ip: str, port: int) -> bool:
    probe = (f"import socket; socket.create_connection(({ip!r}, {port}), timeout=1)")
    return host.run([sys.executable, "-c", probe], timeout=30).returncode == 0


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, need: Any) -> Iterator[Any]:
    need(not netns.available(), netns.available() or "network namespaces")
    need(shutil.which("haproxy") is not None, "HAProxy (apt-get install haproxy)")
    need(binaries() is not None, "PostgreSQL's server binaries (apt-get install postgresql)")
    root = Path(tmp_path_factory.mktemp("replicated"))
    from pki import CA

    net = netns.Network()
    pg = None
    try:
        hosts = {n: net.host(n) for n in ("service", "hpc", "client", "instrument", "wan",
                                          "db", "svc1", "svc2")}
        net.resolve("service.test", hosts["service"])
        hosts["hpc"].only_outbound(443)
        ca = CA(root / "pki")
        f = Facility(net, root, ca, ca.issue("service", ["service.test"]),
                     **{n: hosts[n] for n in ("service", "hpc", "client", "instrument", "wan")})
        db = hosts["db"]
        pg = PrivatePostgres(5432, prefix=db.argv([]), listen=db.ip,
                             trust_net=f"{net.subnet}.0/24")
        pg.start()
        replicas = {}
        for name in ("svc1", "svc2"):  # one at a time: the first makes the user and token
            host = hosts[name]
            replicas[name] = host.popen(
                [sys.executable, "-m", "funcx_flows.service", "--host", host.ip, "--port",
                 str(PORT), "--zmq-port", "0", "--database-url", pg.url, "--cluster"],
                env=base_env(FUNCX_FLOWS_HOME=str(root / f"{name}-home")),
                log=root / f"{name}.log")
            proc = replicas[name]
            wait_until(lambda h=host, p=proc: _reachable(hosts["service"], h.ip, PORT)
                       or p.poll() is not None, 90, f"replica {name} to listen")
            assert replicas[name].poll() is None, (root / f"{name}.log").read_text()[-3000:]
        f.token = (root / "svc1-home" / "token").read_text().strip()
        config = root / "haproxy.cfg"
        config.write_text((REPO / "deploy" / "haproxy.cfg").read_text().rstrip("\n")
                          + f"\n    server service2 {hosts['svc2'].ip}:{PORT}\n")
        f.proxy_proc = hosts["service"].popen(
            ["haproxy", "-db", "-f", str(config)],
            env=base_env(FUNCX_PROXY_BIND=f"{hosts['service'].ip}:443",
                         FUNCX_PROXY_CERT=str(f.cert.bundle),
                         FUNCX_SERVICE_1=f"{hosts['svc1'].ip}:{PORT}"),
            log=root / "haproxy.log")
        assert f.on(f.client, "health", "60")["ok"]
        yield f, replicas
    finally:
        if pg is not None:  # before its host goes
            pg.close()
        net.close()


def _holding(f: Facility, eid: str, replicas: dict[str, Any]) -> list[str]:
    """The replicas whose log says the endpoint connected to them, the latest last."""
    said = {}
    for n in replicas:
        lines = [ln for ln in f.log(f"{n}.log").splitlines() if f"endpoint {eid} connected" in ln]
        if lines:
            said[n] = lines[-1][:23]  # its time stamp
    return sorted(said, key=said.__getitem__)


def test_a_replica_host_lost_mid_run_loses_nothing(replicated) -> None:
    f, replicas = replicated
    with f.endpoint("rep", {"max_workers_per_node": 4}) as eid:
        # the same work through both replicas first (round-robin)
        first = f.on(f.client, "run", eid, "200")
        assert first["ok"] and first["n"] == 200, first
        run = f.start_on(f.client, "run", eid, "2000", "0.02")
        time.sleep(3)  # submitted, some done: most in flight
        holder = _holding(f, eid, replicas)[-1]  # the one it is linked to now
        replicas[holder].send_signal(signal.SIGKILL)
        replicas[holder].wait(10)
        answer = f.answer(run)
        assert answer["ok"] and answer["n"] == 2000 and answer["unique_ids"] == 2000, answer
        assert _holding(f, eid, replicas)[-1] != holder  # the link moved to the survivor
