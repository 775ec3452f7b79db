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
        self.fail_code = 429
        self.page_size = 1000
        self.requests: list[str] = []
        self.auth_headers: list[str] = []
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
                state.auth_headers.append(self.headers.get("Authorization", ""))
                if state.fail_next:
                    state.fail_next -= 1
                    code = "RequestLimitExceeded" if state.fail_code == 429 else "Unavailable"
                    self._send(state.fail_code, {"code": code, "message": "slow down",
                                                 "request_id": "r"})
                    return
                if url.path.endswith("/task_list"):
                    q = parse_qs(url.query)
                    since = q.get("filter", [""])[0].split("completion_time:")[1].split(",")[0]
                    data = sorted((t for t in state.tasks if t["completion_time"][:19] >= since),
                                  key=lambda t: t["completion_time"])
                    offset = int(q.get("offset", ["0"])[0])
                    limit = min(int(q.get("limit", ["1000"])[0]), state.page_size)
                    page = data[offset:offset + limit]
                    self._send(200, {"DATA_TYPE": "task_list", "DATA": page, "length": len(page),
                                     "limit": limit, "offset": offset, "total": len(data)})
                elif url.path.endswith("/successful_transfers"):
                    task_id = url.path.split("/")[-2]
                    self._send(200, {"DATA_TYPE": "successful_transfers", "marker": 0,
                                     "next_marker": None, "DATA": [
                                         {"source_path": p, "destination_path": p}
                                         for p in state.files.get(task_id, [])]})
                else:
                    self._send(404, {"code": "NotFound", "message": self.path, "request_id": "r"})

        def do_POST(self) -> None:  # Globus Auth's token endpoint, for client credentials
            with state.lock:
                state.requests.append(self.path)
            if self.path.endswith("/v2/oauth2/token"):
                self._send(200, {"access_token": "service-token", "expires_in": 3600,
                                 "resource_server": "transfer.api.globus.org",
                                 "token_type": "Bearer", "scope": "urn:globus:auth:scope:"
                                 "transfer.api.globus.org:all", "other_tokens": []})
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


def test_every_page_of_tasks_is_read_and_each_task_fires_once(fake, tmp_path):
    server, url = fake
    server.page_size = 2
    store = StateStore(tmp_path / "state.db")
    calls: list = []
    with Running(make(url, store, calls)):
        for i in range(7):
            server.add(f"t{i}", now_iso(), "x", [f"/f{i}"])
        assert wait_until(lambda: len(calls) == 7, 30)
        time.sleep(0.5)
    assert sorted(c[0] for c in calls) == [f"t{i}" for i in range(7)]
    assert any("offset=6" in r for r in server.requests)  # really paged
    store.close()


def test_tasks_that_land_while_it_is_down_fire_after_server_errors(fake, tmp_path):
    server, url = fake
    store = StateStore(tmp_path / "state.db")
    calls: list = []
    with Running(make(url, store, calls)):
        server.add("t1", now_iso(), "x", ["/a"])
        assert wait_until(lambda: calls, 20)
    server.add("t2", now_iso(), "x", ["/b"])
    server.add("t3", now_iso(), "x", ["/c"])
    server.fail_code, server.fail_next = 503, 3
    calls2: list = []
    trig = make(url, store, calls2)
    with Running(trig):
        assert wait_until(lambda: len(calls2) == 2, 30)
        time.sleep(0.5)
    assert sorted(calls2) == [("t2", ["/b"]), ("t3", ["/c"])]
    assert any("503" in p or "slow down" in p for p in trig.problems)
    assert store.counts()["landed"] == {"done": 3}
    store.close()


def test_a_trigger_that_saw_nothing_still_keeps_its_place_across_restarts(fake, tmp_path):
    server, url = fake
    store = StateStore(tmp_path / "state.db")
    with Running(make(url, store, [])):
        assert wait_until(lambda: store.get_mark("landed", "floor") is not None, 20)
    server.add("t-while-down", now_iso(), "x", ["/a"])
    calls: list = []
    later = make(url, store, calls)
    later.clock = lambda: time.time() + 3600  # restarted an hour later, overlap is 60 s
    with Running(later):
        assert wait_until(lambda: calls, 20)
    assert calls == [("t-while-down", ["/a"])]
    store.close()


def test_stored_user_tokens_and_a_confidential_client_authenticate(fake, tmp_path, monkeypatch):
    from funcx_flows.errors import ConfigError
    from funcx_flows.triggers.config import GlobusAuthConfig
    from funcx_flows.triggers.globus_auth import transfer_client

    server, url = fake
    server.add("t1", now_iso(), "x", ["/a"])
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"access_token": "user-token"}))
    since = "completion_time:2000-01-01T00:00:00,"
    transfer_client(GlobusAuthConfig(token_file=str(tokens)), url).task_list(filter=since)
    assert server.auth_headers[-1] == "Bearer user-token"

    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", url)
    monkeypatch.setenv("FUNCX_FLOWS_GLOBUS_CLIENT_SECRET", "s3cret")
    transfer_client(GlobusAuthConfig(client_id="cid"), url).task_list(filter=since)
    assert any(r.endswith("/v2/oauth2/token") for r in server.requests)
    assert server.auth_headers[-1] == "Bearer service-token"

    monkeypatch.delenv("FUNCX_FLOWS_GLOBUS_CLIENT_SECRET")
    monkeypatch.delenv("FUNCX_FLOWS_GLOBUS_CLIENT_ID", raising=False)
    with pytest.raises(ConfigError, match="FUNCX_FLOWS_GLOBUS_CLIENT_SECRET"):
        transfer_client(GlobusAuthConfig(), url)
    with pytest.raises(ConfigError, match=r"auth\.token_file"):
        transfer_client(GlobusAuthConfig(token_file=str(tmp_path / "none.json")), url)
