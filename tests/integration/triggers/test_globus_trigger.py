"""The Globus transfer trigger against the real globus-sdk TransferClient talking to a
local HTTP server that plays Transfer (task list, successful transfers, rate limits)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import globus_sdk
import pytest
from globus_sdk.transport import RetryConfig

from funcx_flows.triggers.config import GlobusTriggerConfig, TargetConfig
from funcx_flows.triggers.globus import GlobusTransferTrigger
from funcx_flows.triggers.serve import Running, wait_until
from funcx_flows.triggers.state import StateStore

DEST = "faa48700-e885-4f84-b0cc-03008aaa1266"


class FakeTransfer:
    def __init__(self) -> None:
        self.tasks: list[dict] = []
        self.files: dict[str, list[str]] = {}
        self.fail_next = 0
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def add(self, task_id: str, completed: str, label: str, files: list[str]) -> None:
        with self.lock:
            self.tasks.append({"DATA_TYPE": "task", "task_id": task_id, "status": "SUCCEEDED",
                               "type": "TRANSFER", "label": label, "completion_time": completed,
                               "destination_endpoint_id": DEST})
            self.files[task_id] = files


@pytest.fixture
def fake() -> Iterator[tuple[FakeTransfer, str]]:
    state = FakeTransfer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            with state.lock:
                state.requests.append(self.path)
                if state.fail_next:
                    state.fail_next -= 1
                    self._send(429, {"code": "RequestLimitExceeded", "message": "slow down",
                                     "request_id": "r"})
                    return
                if url.path.endswith("/task_list"):
                    q = parse_qs(url.query)
                    since = q.get("filter", [""])[0].split("completion_time:")[1].split(",")[0]
                    data = [t for t in state.tasks if t["completion_time"][:19] >= since]
                    self._send(200, {"DATA_TYPE": "task_list", "DATA": data, "length": len(data),
                                     "limit": 1000, "offset": 0, "total": len(data)})
                elif url.path.endswith("/successful_transfers"):
                    task_id = url.path.split("/")[-2]
                    self._send(200, {"DATA_TYPE": "successful_transfers", "marker": 0,
                                     "next_marker": None, "DATA": [
                                         {"source_path": p, "destination_path": p}
                                         for p in state.files.get(task_id, [])]})
                else:
                    self._send(404, {"code": "NotFound", "message": self.path, "request_id": "r"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def now_iso(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + offset))


def make(url: str, store: StateStore, calls: list, **options) -> GlobusTransferTrigger:
    client = globus_sdk.TransferClient(base_url=url, retry_config=RetryConfig(max_retries=0))
    config = GlobusTriggerConfig(name="landed", target=TargetConfig(flow="unused:f"),
                                 poll_interval_s=0.1, overlap_s=60, **options)
    return GlobusTransferTrigger(config, store, client,
                                 call=lambda task_id, files: calls.append((task_id, files)))


def test_fires_once_per_matching_task_across_restarts(fake, tmp_path):
    server, url = fake
    store = StateStore(tmp_path / "state.db")
    calls: list = []
    server.add("t-old", now_iso(-3600), "beamline run 1", ["/scratch/old.h5"])
    opts = {"label_pattern": "^beamline", "path_prefix": "/scratch/"}
    with Running(make(url, store, calls, **opts)):
        server.add("t1", now_iso(), "beamline run 7", ["/scratch/a.h5", "/scratch/b.h5"])
        server.add("t2", now_iso(), "someone else", ["/scratch/c.h5"])
        server.add("t3", now_iso(), "beamline run 8", ["/home/elsewhere.h5"])
        assert wait_until(lambda: calls, 20)
        time.sleep(0.5)  # several more polls see the same tasks
    assert calls == [("t1", ["/scratch/a.h5", "/scratch/b.h5"])]  # not t-old: before start
    assert store.get_mark("landed", "completion_time")
    calls2: list = []
    with Running(make(url, store, calls2, **opts)):
        server.add("t4", now_iso(), "beamline run 9", ["/scratch/d.h5"])
        assert wait_until(lambda: calls2, 20)
        time.sleep(0.5)
    assert calls2 == [("t4", ["/scratch/d.h5"])]
    store.close()


def test_rate_limits_back_off_keep_the_watermark_and_lose_nothing(fake, tmp_path):
    server, url = fake
    store = StateStore(tmp_path / "state.db")
    calls: list = []
    trig = make(url, store, calls)
    server.fail_next = 3
    server.add("t1", now_iso(), "x", ["/a"])
    with Running(trig):
        assert wait_until(lambda: calls, 30)
    assert calls == [("t1", ["/a"])]
    assert any("slow down" in p for p in trig.problems)
    store.close()
