"""The link between endpoint and service cut and restored (a TCP relay on the path is
dropped, connections and all): results spool on disk and arrive once afterwards."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

from stacks import running
from waiting import wait_until

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor


class Relay:
    """A TCP relay 127.0.0.1:port -> target that can cut every connection and refuse
    new ones until restored."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.target: tuple[str, int] | None = None
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set() or self.target is None:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                pipe = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                self.threads.append(pipe)
                pipe.start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):  # (already reset by the peer)
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        """Ends its threads: a listening socket's shutdown wakes the accept (its
        close alone does not)."""
        self.stopped = True
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for t in self.threads:
            t.join(10)


def work(i):
    import time

    time.sleep(0.005)
    return -i


def test_results_spool_during_a_cut_and_arrive_once_after(tmp_path: Path):
    with contextlib.closing(Relay()) as relay, running(tmp_path / "home", env={
            "FUNCX_FLOWS_ZMQ_PUBLIC_URL": f"tcp://127.0.0.1:{relay.port}",
            "FUNCX_FLOWS_HEARTBEAT_PERIOD_S": "0.5",
            "FUNCX_FLOWS_HEARTBEAT_THRESHOLD_S": "2"}) as stack:
        relay.target = ("127.0.0.1", _bound_zmq_port(stack))
        ep = stack.start_endpoint("ep", {"max_workers_per_node": 2, "heartbeat_period_s": 0.5,
                                         "heartbeat_threshold_s": 2})
        client = stack.client()
        log = ep.folder / "foreground.log"
        with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
            warm = [ex.submit(work, i) for i in range(20)]
            assert [f.result(timeout=60) for f in warm] == [-i for i in range(20)]
            futures = [ex.submit(work, i) for i in range(600)]
            wait_until(lambda: sum(f.done() for f in futures) >= 50, 60, "50 results")
            relay.cut()
            # past the heartbeat threshold: both sides notice
            wait_until(lambda: "link to the service lost" in log.read_text(), 60,
                       "the agent to notice the cut")
            wait_until(lambda: client.get_endpoint_status(ep.endpoint_id)["state"] != "online",
                       60, "the service to notice the cut")
            done_during_cut = sum(f.done() for f in futures)
            relay.restore()
            values = [f.result(timeout=120) for f in futures]
        assert values == [-i for i in range(600)]
        assert done_during_cut < 600
        records = client.fetch_tasks([f.task_id for f in futures])
        assert {r["state"] for r in records} == {"success"}
        endpoint_log = log.read_text()
        resent = re.findall(r"connected to the service \((\d+) results", endpoint_log)
        assert len(resent) >= 2, "the agent did not reconnect"
        client.close()


def _bound_zmq_port(stack: LocalStack) -> int:
    """The ROUTER's real port, from the service's log line."""
    def logged() -> list[str]:
        text = (stack.home / "service-stdout.log").read_text()
        return re.findall(r"ROUTER bound on tcp://127\.0\.0\.1:(\d+)", text)

    return int(wait_until(logged, 30, "the service to log its bound ZeroMQ port")[-1])
