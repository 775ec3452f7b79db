"""Trigger targets against a real Prefect server: a deployment started with an
idempotency key (a repeated start never makes a second flow run), an event, runs
cut off by a crash judged by Prefect's record, and 503s retried on our policy."""

from __future__ import annotations

import contextlib
import http.server
import os
import select
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from prefect import flow, get_client
from waiting import wait_until

from funcx_flows.triggers.config import TargetConfig
from funcx_flows.triggers.state import Run, StateStore
from funcx_flows.triggers.targets import Starter


@flow(name="landed-data")
def landed(paths: list[str]) -> int:
    return len(paths)


def run_of(context):
    return Run(run_id=str(uuid.uuid4()), trigger="det", context=context, state="queued",
               attempts=0, next_at=0.0, error=None, created_at=time.time())


def test_deployment_target_is_idempotent_per_run(prefect_server, tmp_path):
    deployment_id = landed.to_deployment(name="from-trigger").apply()
    store = StateStore(tmp_path / "s.db")
    starter = Starter("det", TargetConfig(kind="deployment",
                                          deployment="landed-data/from-trigger",
                                          parameters={"paths": "{paths}"}), store, 1)
    run = run_of({"paths": ["/a", "/b"]})
    first = starter.start(run)
    again = starter.start(run)  # a retry of the same run
    other = starter.start(run_of({"paths": ["/c"]}))
    assert first == again and first != other
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    mine = [r for r in runs if r.deployment_id == deployment_id]
    assert len(mine) == 2
    assert sorted(r.parameters["paths"] for r in mine) == [["/a", "/b"], ["/c"]]
    starter.close()
    store.close()


def test_event_target_emits_an_event(prefect_server, tmp_path):
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    store = StateStore(tmp_path / "s.db")
    starter = Starter("det", TargetConfig(kind="event", event="beamline.frames.landed",
                                          parameters={"paths": "{paths}", "n": "{count}"}),
                      store, 1)
    starter.start(run_of({"paths": ["/a"], "count": 1}))
    EventsWorker.drain_all()
    url = PREFECT_API_URL.value().rstrip("/") + "/events/filter"
    body = {"filter": {"event": {"name": ["beamline.frames.landed"]}}, "limit": 10}
    deadline = time.monotonic() + 30
    events: list = []
    while not events:
        assert time.monotonic() < deadline, "the event never reached the Prefect API"
        events = httpx.post(url, json=body, timeout=10).json().get("events", [])
        time.sleep(0.3)
    assert events[0]["payload"] == {"paths": ["/a"], "n": 1}
    assert events[0]["resource"]["prefect.resource.id"] == "funcx-flows.trigger.det"
    starter.close()
    store.close()


def test_interrupted_flow_runs_are_checked_against_the_prefect_api(prefect_server, tmp_path):
    """Runs a crashed trigger had started, without their marks: Prefect's record decides."""
    from prefect import tags
    from prefect.states import Running

    from funcx_flows.prefect.flowruns import without_heartbeats
    from funcx_flows.triggers.recovery import run_tag

    store = StateStore(tmp_path / "s.db")
    finished, cut, never = (store.add_run("det", {"paths": [f"/{n}"]}) for n in "abc")
    while store.claim("det") is not None:  # the process that died had started all three
        pass
    with tags(run_tag(finished)), without_heartbeats():
        landed(["/a"])  # ran to Completed; its process died before anything else was written
    with get_client(sync_client=True) as client:
        stuck = client.create_flow_run(landed, tags=[run_tag(cut)], state=Running())
    starter = Starter("det", TargetConfig(flow="tests:landed"), store, 1, call=landed)

    assert starter.recover() == 3

    states = {r.run_id: r.state for r in store.runs("det")}
    assert states == {finished: "done", cut: "interrupted", never: "interrupted"}
    verdicts = {m.run_id: m.verdict for m in store.flow_run_marks()}
    assert verdicts == {finished: "finished", cut: "cut off", never: "not started"}
    with get_client(sync_client=True) as client:  # nothing runs it any more
        assert client.read_flow_run(stuck.id).state.is_crashed()
    starter.close()
    store.close()


started: list[str] = []


@flow(name="heartbeat-probe")
def probe(paths: list[str]) -> int:
    from prefect.runtime import flow_run

    started.append(flow_run.id)
    return len(paths)


def heartbeats_of(flow_run_ids: list[str]) -> dict[str, int]:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value().rstrip("/") + "/events/filter"
    body = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}}, "limit": 50}
    events = httpx.post(url, json=body, timeout=10).json().get("events", [])
    ids = [e["resource"]["prefect.resource.id"].rsplit(".", 1)[-1] for e in events]
    return {i: ids.count(i) for i in flow_run_ids}


def test_flow_target_runs_without_heartbeats_unless_asked(prefect_server, tmp_path):
    """Prefect ends each flow run by waiting out its heartbeat thread's 1 s sleep."""
    from prefect.events.worker import EventsWorker

    store = StateStore(tmp_path / "s.db")
    for n, heartbeats in enumerate((False, True), 1):
        starter = Starter("det", TargetConfig(flow="tests:probe", prefect_heartbeats=heartbeats,
                                              parameters={"paths": "{paths}"}),
                          store, 1, call=probe)
        store.add_run("det", {"paths": ["/a"]})
        starter.pump()
        wait_until(lambda: store.counts()["det"].get("done") == n, 60)  # noqa: B023
        starter.close()
    EventsWorker.drain_all()
    default, asked = started[-2:]
    wait_until(lambda: heartbeats_of([asked])[asked] > 0, 30, "no heartbeat at all")
    assert heartbeats_of([default])[default] == 0
    store.close()


class Flaky(http.server.ThreadingHTTPServer):
    """A proxy in front of the Prefect API that answers 503 to some of the POSTs on
    flow runs (by plan, in order), passes the rest, and tunnels WebSockets (events)."""

    daemon_threads = True

    def __init__(self, upstream: str, plan: list[bool]) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        url = urllib.parse.urlsplit(upstream)
        self.origin, self.address = f"{url.scheme}://{url.netloc}", (url.hostname, url.port)
        self.plan, self.injected, self.lock = list(plan), 0, threading.Lock()
        self.client = httpx.Client(timeout=60)
        self.connections: list[tuple[socket.socket, threading.Thread]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             daemon=True)
        self.connections.append((request, t))
        t.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"

    def fail(self, method: str, path: str) -> bool:
        if method != "POST" or "/flow_runs" not in path:
            return False
        with self.lock:
            if self.plan and self.plan.pop(0):
                self.injected += 1
                return True
        return False

    def close(self) -> None:
        """Stop serving and end every connection still open: a client's kept-alive
        connection (or its events WebSocket) would keep its thread until the client
        closes it, which under load can be after the test ends."""
        self.shutdown()
        self.server_close()
        for conn, _ in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for _, t in self.connections:
            t.join(10)
        self.client.close()
        self.thread.join(10)


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Flaky

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._tunnel()
        else:
            self._forward()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.fail(self.command, self.path):
            self._answer(503, {"content-type": "application/json"},
                         b'{"exception_message": "Service Unavailable"}')
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        r = self.server.client.request(self.command, self.server.origin + self.path,
                                       content=body, headers=headers)
        self._answer(r.status_code, {k: v for k, v in r.headers.items() if k.lower() not in (
            "content-length", "content-encoding", "transfer-encoding", "connection")},
            r.content)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _tunnel(self) -> None:
        with socket.create_connection(self.server.address) as up:
            head = self.requestline + "\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
            up.sendall(head.encode())
            ends = {self.connection: up, up: self.connection}
            while True:
                ready, _, _ = select.select(list(ends), [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        self.close_connection = True
                        return
                    ends[s].sendall(data)


@contextlib.contextmanager
def api_for_every_thread(url: str) -> Iterator[None]:
    """As the trigger CLI does: every thread's flow runs go to ``url``."""
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    prefect.context.refresh_global_settings_context()
    try:
        yield
    finally:
        APILogWorker.drain_all(timeout=10)  # nothing left to send to ``url`` afterwards
        EventsWorker.drain_all(timeout=10)
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        prefect.context.refresh_global_settings_context()


def test_flow_target_retries_503s_from_the_prefect_api_on_the_project_policy(
        prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from funcx_flows.retry import RetryPolicy

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    policy = RetryPolicy(initial=0.01, max_delay=0.05, max_attempts=8, sleep=sleep)
    # create: 503, 503, ok; Running: 503, ok; Completed: 503, ok
    proxy = Flaky(PREFECT_API_URL.value(), [True, True, False, True, False, True, False])
    store = StateStore(tmp_path / "s.db")
    starter = Starter("det", TargetConfig(flow="tests:landed", parameters={"paths": "{paths}"}),
                      store, 1, call=landed, api_retry=policy)
    try:
        with api_for_every_thread(proxy.url):
            run_id = store.add_run("det", {"paths": ["/a", "/b"]})
            starter.pump()
            wait_until(lambda: store.runs("det")[0].state != "running"
                       and not starter.busy, 120)
            starter.close()
    finally:
        proxy.close()
    run = store.runs("det")[0]
    assert (run.run_id, run.state, run.attempts) == (run_id, "done", 1), run.error
    assert proxy.injected == 4
    assert len(waits) == 4 and all(0 < w <= 0.05 for w in waits)  # ours, not Prefect's 2-8 s
    store.close()
