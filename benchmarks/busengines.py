"""Private instances of the three candidate buses, for bench_bus.py (issue 17).

Each engine runs as a server of our own, from Debian's packages, on a loopback
port of its own, in a temporary folder: never the machine's shared services.
Each can be stopped gracefully or crashed, and started again on the same data,
which is what the restart test needs; each is stopped by the pid it started.

    PgCluster     initdb + pg_ctl as the ``postgres`` user (when run as root)
    RedisServer   redis-server, no persistence
    RabbitServer  rabbitmq-server with a node name, ports, epmd and folders of its own

``server_cpu()`` is the CPU time (s) the server's processes have used so far, to
give the engine's own cost per notification.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> float:
    """Seconds until 127.0.0.1:port accepts a connection."""
    t0 = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - t0
        except OSError:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"nothing listens on port {port} after {timeout} s") from None
            time.sleep(0.02)


def _tree_cpu(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _stop_pid(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class PgCluster:
    """A PostgreSQL 15 cluster of our own (initdb under ``root``), port ``port``."""

    name = "postgres"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        root.mkdir(parents=True, exist_ok=True)
        if self._as:  # the server's user must reach its folder through ours
            shutil.chown(root, "postgres", "postgres")
            os.chmod(root.parent, root.parent.stat().st_mode | 0o111)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                  "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, cwd=self.root)

    def start(self) -> float:
        t0 = time.monotonic()
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
                  "-w", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
                  "start")
        return time.monotonic() - t0

    def stop(self, crash: bool = False) -> None:
        """``crash``: an immediate stop, as after a crash (recovery at the next start)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m",
                  "immediate" if crash else "fast", "stop")

    def pid(self) -> int:
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else 0

    def server_cpu(self) -> float:
        return _tree_cpu(self.pid())

    def close(self) -> None:
        if self.pid():
            self.stop()


class _ChildServer:
    """A server that is our child process: stopped by SIGTERM (SIGKILL as a crash)."""

    proc: subprocess.Popen[bytes] | None = None

    def stop(self, crash: bool = False) -> None:
        _stop_pid(self.proc, signal.SIGKILL if crash else signal.SIGTERM)

    def pid(self) -> int:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else 0

    def server_cpu(self) -> float:
        return _tree_cpu(self.pid())

    def close(self) -> None:
        self.stop()


class RedisServer(_ChildServer):
    name = "redis"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        t0 = time.monotonic()
        with (self.root / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.root),
                 "--daemonize", "no", "--protected-mode", "yes"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 30)
        return time.monotonic() - t0


class RabbitServer:
    """rabbitmq-server as node ``benchbus-<port>@localhost``: AMQP, distribution and
    epmd ports of its own, on 127.0.0.1; the epmd it starts is stopped on close."""

    name = "rabbitmq"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dist_port, self.epmd_port = free_port(), free_port()
        self.node = f"benchbus-{self.port}@localhost"
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text("loopback_users = none\n")
        self.env = {
            **os.environ, "HOME": str(root), "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"), "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_LOGS": str(root / "log" / "rabbit.log"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(root / "rabbit.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self) -> float:
        t0 = time.monotonic()
        with (self.root / "rabbitmq.out").open("ab") as log:
            # a script that runs beam.smp and stops it on SIGTERM
            self.proc = subprocess.Popen(["/usr/lib/rabbitmq/bin/rabbitmq-server"],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root)
        wait_port(self.port, 120)
        return time.monotonic() - t0

    def _broker(self) -> psutil.Process | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                if p.name() == "beam.smp":
                    return p
        except psutil.NoSuchProcess:
            pass
        return None

    def stop(self, crash: bool = False) -> None:
        broker = self._broker()
        if crash and broker is not None:
            broker.kill()  # as a crash: the script around it then ends too
        _stop_pid(self.proc, signal.SIGTERM)

    def pid(self) -> int:
        broker = self._broker()
        return broker.pid if broker is not None else 0

    def server_cpu(self) -> float:
        return _tree_cpu(self.pid())

    def close(self) -> None:
        self.stop()
        for p in psutil.process_iter(["name"]):  # the epmd our node started, by its port
            if p.info["name"] != "epmd":
                continue
            try:
                env = p.environ()
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                continue
            if env.get("ERL_EPMD_PORT") == str(self.epmd_port) and \
                    env.get("RABBITMQ_NODENAME") == self.node:
                p.terminate()
                with contextlib.suppress(psutil.TimeoutExpired):
                    p.wait(5)  # it is not our child: it may linger as a zombie of init's




RELAY = r'''
import selectors, socket, sys
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
subs, pubs = set(), set()
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is srv:
            c, _ = srv.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(c, selectors.EVENT_READ)
            continue
        data = s.recv(65536)
        if not data:
            sel.unregister(s); subs.discard(s); pubs.discard(s); s.close()
        else:
            if s not in subs and s not in pubs:  # its first byte says which it is
                (subs if data.startswith(b"S") else pubs).add(s)
                data = data[1:]
            if data and s in pubs:
                for c in list(subs):
                    c.sendall(data)
'''


class FloorRelay(_ChildServer):
    """Not a candidate: a few lines of Python that copy every byte a publisher sends to
    every subscriber (no framing, no persistence). Two hops like any broker, so its
    figures are this machine's floor for a brokered wake-up at the time of the run."""

    name = "floor"

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> float:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(["python3", "-c", RELAY, str(self.port)])
        wait_port(self.port, 30)
        return time.monotonic() - t0



ENGINES = {"postgres": PgCluster, "redis": RedisServer, "rabbitmq": RabbitServer}
FLOOR = {"floor": FloorRelay}
