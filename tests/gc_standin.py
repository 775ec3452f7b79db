"""A stand-in of the Globus Compute web service, for the unmodified globus-compute-sdk.

It speaks the routes, JSON shapes and serialization the SDK's own code uses
(globus_sdk.ComputeClientV2/V3 and globus_compute_sdk 4.x; the facts are in
/work/shared/notes/globus-compute.md), and it runs what it is sent: a submitted
task's function and arguments are unpacked with the SDK's ``ComputeSerializer``
and called in a thread pool, and the result (or the traceback, as a real endpoint
sends it) goes back as a ``globus_compute_common`` ``Result`` on a real RabbitMQ
queue, which the SDK's Executor consumes, and into the task table that
``Client.get_result`` / ``get_batch_result`` read over REST.

::

    SDK Client --HTTP 127.0.0.1:5000--> handler --+--> functions / tasks tables
                                                  +--> pool: fn(*args, **kwargs)
                                                             |
    SDK Executor <--AMQP (queue per task group)-- publisher <+

The SDK's ``local`` environment is fixed at http://localhost:5000, so the port is.
Auth: ``POST /v2/oauth2/token`` (client credentials, HTTP basic) hands out a
token for the resource server ``funcx_service``; every other route wants it.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import queue
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from guards import threads_outlive_tests

PORT = 5000
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SCOPE = "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/all"
QUEUE_PREFIX = "standin."
# the tests' endpoint and client identity
EP = "6f0f3a3c-36c4-4f5b-a7a3-2a2b2f8d0c11"
CLIENT_ID = "00000000-0000-0000-0000-000000000019"
CLIENT_SECRET = "standin-secret"


def rabbitmq_up(url: str = AMQP_URL) -> bool:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(url + "?connection_attempts=1")).close()
    except Exception:
        return False
    return True


def port_free(port: int = PORT) -> bool:
    import socket

    with socket.socket() as s:
        # as the server binds (allow_reuse_address): a closed connection's TIME_WAIT
        # does not hold the port, only a listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class TaskRow:
    task_id: str
    function_id: str
    endpoint_id: str
    group_id: str
    status: str = "waiting-for-ep"
    result: str | None = None
    exception: str | None = None
    completion_t: str | None = None


@dataclass
class Calls:
    """What the SDK sent, for tests to look at."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    submits: list[dict[str, Any]] = field(default_factory=list)
    functions: list[dict[str, Any]] = field(default_factory=list)
    token_grants: list[dict[str, list[str]]] = field(default_factory=list)


class _Publisher(threading.Thread):
    """Owns the one pika connection (pika's are not thread-safe): declares the
    result queues and publishes results, in the order they are asked for."""

    def __init__(self, url: str) -> None:
        super().__init__(name="gc-standin-amqp", daemon=True)
        import pika

        self._conn = pika.BlockingConnection(pika.URLParameters(url))
        self._chan = self._conn.channel()
        self._ops: queue.SimpleQueue[tuple[str, str, bytes, threading.Event | None] | None] = (
            queue.SimpleQueue())

    def declare(self, name: str) -> None:
        done = threading.Event()
        self._ops.put(("declare", name, b"", done))
        done.wait(30)

    def publish(self, name: str, body: bytes) -> None:
        self._ops.put(("publish", name, body, None))

    def run(self) -> None:
        while True:
            op = self._ops.get()
            if op is None:
                break
            kind, name, body, done = op
            if kind == "declare":
                # an unused queue goes away by itself: the tests leave none behind
                self._chan.queue_declare(name, arguments={"x-expires": 60_000})
            else:
                self._chan.basic_publish("", name, body)
            if done is not None:
                done.set()
        self._conn.close()

    def stop(self) -> None:
        self._ops.put(None)
        self.join(10)


class GlobusComputeStandIn:
    """The web service on 127.0.0.1:5000, its endpoints ``endpoint_ids`` (online
    unless listed in ``offline``)."""

    def __init__(self, endpoint_ids: list[str], *, client_id: str, client_secret: str,
                 amqp_url: str = AMQP_URL, workers: int = 4) -> None:
        from globus_compute_sdk.serialize import ComputeSerializer

        self.endpoint_ids = {str(uuid.UUID(e)) for e in endpoint_ids}
        self.offline: set[str] = set()
        self.client_id, self.client_secret = client_id, client_secret
        self.amqp_url = amqp_url
        self.tokens: set[str] = set()
        self.calls = Calls()
        self.functions: dict[str, str] = {}  # id -> packed code
        self.tasks: dict[str, TaskRow] = {}
        self.serde = ComputeSerializer()
        self._lock = threading.Lock()
        self._pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="gc-standin-worker")
        self._publisher = _Publisher(amqp_url)
        self._server = _Server(("127.0.0.1", PORT), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="gc-standin-http", daemon=True)

    def __enter__(self) -> GlobusComputeStandIn:
        self._publisher.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._publisher.stop()

    def issue_token(self) -> str:
        tok = "gc-standin-" + uuid.uuid4().hex
        self.tokens.add(tok)
        return tok

    # -------------------------------------------------------- execution --

    def _run(self, row: TaskRow, payload: str) -> None:
        from globus_compute_common import messagepack
        from globus_compute_common.messagepack.message_types import Result, ResultErrorDetails

        row.status = "running"
        error: ResultErrorDetails | None = None
        try:
            code = self.serde.unpack_buffers(self.functions[row.function_id])[0]
            fn = self.serde.deserialize(code)
            args_buf, kwargs_buf = self.serde.unpack_buffers(payload)
            value = fn(*self.serde.deserialize(args_buf), **self.serde.deserialize(kwargs_buf))
            data = self.serde.serialize(value)
            row.result, row.status = data, "success"
        except Exception as exc:  # what the function raised, as an endpoint reports it
            data = traceback.format_exc()
            error = ResultErrorDetails(code="RemoteExecutionError",
                                       user_message=f"Remote exception: {exc!r}")
            row.exception, row.status = data, "failed"
        row.completion_t = str(time.time())
        body = messagepack.pack(Result(task_id=uuid.UUID(row.task_id), data=data,
                                       error_details=error))
        self._publisher.publish(QUEUE_PREFIX + row.group_id, body)

    def submit(self, endpoint_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if endpoint_id not in self.endpoint_ids:
            return 404, {"code": "ENDPOINT_NOT_FOUND",
                         "reason": f"Endpoint {endpoint_id} could not be found"}
        unknown = [f for f in body.get("tasks", {}) if f not in self.functions]
        if unknown:
            return 404, {"code": "FUNCTION_NOT_FOUND",
                         "reason": f"Function {unknown[0]} could not be found"}
        group = str(body.get("task_group_id") or uuid.uuid4())
        if body.get("create_queue"):
            self._publisher.declare(QUEUE_PREFIX + group)
        answer: dict[str, list[str]] = {}
        started: list[tuple[TaskRow, str]] = []
        with self._lock:
            self.calls.submits.append(body)
            for fn_id, payloads in body["tasks"].items():
                for payload in payloads:
                    row = TaskRow(str(uuid.uuid4()), fn_id, endpoint_id, group)
                    self.tasks[row.task_id] = row
                    answer.setdefault(fn_id, []).append(row.task_id)
                    started.append((row, payload))
        if endpoint_id not in self.offline:
            for row, payload in started:
                self._pool.submit(self._run, row, payload)
        return 200, {"request_id": str(uuid.uuid4()), "task_group_id": group,
                     "endpoint_id": endpoint_id, "tasks": answer}

    def task_doc(self, task_id: str) -> dict[str, Any] | None:
        row = self.tasks.get(task_id)
        if row is None:
            return None
        doc: dict[str, Any] = {"task_id": task_id, "status": row.status,
                               "task_group_id": row.group_id}
        if row.status == "success":
            doc.update(result=row.result, completion_t=row.completion_t)
        elif row.status == "failed":
            doc.update(exception=row.exception, completion_t=row.completion_t)
        return doc


_ENDPOINT_STATUS = re.compile(r"^/v2/endpoints/([0-9a-f-]{36})/status$")
_SUBMIT = re.compile(r"^/v3/endpoints/([0-9a-f-]{36})/submit$")
_TASK = re.compile(r"^/v2/tasks/([0-9a-f-]{36})$")


def _handler(svc: GlobusComputeStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, doc: dict[str, Any]) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and auth[7:] in svc.tokens:
                return True
            self._send(401, {"code": "AUTHENTICATION_ERROR", "reason": "bad or no token"})
            return False

        def _token(self) -> None:
            form = parse_qs(self._body().decode())
            svc.calls.token_grants.append(form)
            basic = self.headers.get("Authorization", "")
            try:
                ident, _, secret = base64.b64decode(basic.removeprefix("Basic ")).decode() \
                    .partition(":")
            except ValueError:
                ident = secret = ""
            if (ident, secret) != (svc.client_id, svc.client_secret) \
                    or form.get("grant_type") != ["client_credentials"]:
                self._send(401, {"error": "invalid_client"})
                return
            self._send(200, {"access_token": svc.issue_token(), "token_type": "Bearer",
                             "expires_in": 172800, "resource_server": "funcx_service",
                             "scope": " ".join(form.get("scope", [SCOPE])),
                             "other_tokens": []})

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            svc.calls.requests.append(("GET", path))
            if not self._authorized():
                return
            if path == "/v2/version":
                self._send(200, {"api": "1.0", "min_sdk_version": "1.0.0",
                                 "min_ep_version": "1.0.0", "min_endpoint_version": "1.0.0",
                                 "version": "1.0.0"})
            elif path == "/v2/get_amqp_result_connection_url":
                self._send(200, {"queue_prefix": QUEUE_PREFIX,
                                 "connection_url": svc.amqp_url})
            elif m := _ENDPOINT_STATUS.match(path):
                ep = m.group(1)
                if ep not in svc.endpoint_ids:
                    self._send(404, {"code": "ENDPOINT_NOT_FOUND", "reason": ep})
                else:
                    self._send(200, {"status": "offline" if ep in svc.offline else "online",
                                     "details": {}})
            elif m := _TASK.match(path):
                doc = svc.task_doc(m.group(1))
                if doc is None:
                    self._send(404, {"code": "TASK_NOT_FOUND", "reason": m.group(1)})
                else:
                    self._send(200, doc)
            else:
                self._send(404, {"code": "NOT_FOUND", "reason": path})

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            svc.calls.requests.append(("POST", path))
            if path == "/v2/oauth2/token":
                self._token()
                return
            if not self._authorized():
                self._body()
                return
            try:
                body = json.loads(self._body() or b"{}")
            except ValueError:
                self._send(400, {"code": "BAD_REQUEST", "reason": "invalid JSON"})
                return
            if path == "/v3/functions":
                fid = str(uuid.uuid4())
                with svc._lock:
                    svc.functions[fid] = body["function_code"]
                    svc.calls.functions.append(body)
                self._send(200, {"function_uuid": fid})
            elif m := _SUBMIT.match(path):
                self._send(*svc.submit(m.group(1), body))
            elif path == "/v2/batch_status":
                results = {t: d for t in body.get("task_ids", [])
                           if (d := svc.task_doc(t)) is not None}
                self._send(200, {"response": "batch", "results": results})
            else:
                self._send(404, {"code": "NOT_FOUND", "reason": path})

    return Handler


class _Server(ThreadingHTTPServer):
    """Its connections' threads named, so that the leak guard knows them as the
    stand-in's (they end with a client's kept-alive connection, or the fixture)."""

    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        threading.Thread(target=self.process_request_thread, args=(request, client_address),
                         name="gc-standin-request", daemon=True).start()


@pytest.fixture(scope="module")
def gc(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
       need: Callable[[bool, str], None]) -> Iterator[GlobusComputeStandIn]:
    """The stand-in, with GLOBUS_COMPUTE_CLIENT_ID/_SECRET set for its client and the
    SDK's token storage in a temporary folder. Its threads, and those of the SDK
    Executors that funcx-flows' backend keeps until the module ends, outlive tests."""
    need(rabbitmq_up(), "RabbitMQ on 127.0.0.1:5672 for the Globus Compute "
         "Executor's results (.ci/start-rabbitmq.sh)")
    need(port_free(), "port 5000 on 127.0.0.1 free for the Globus Compute stand-in "
         "(the SDK's 'local' environment is fixed there)")
    threads_outlive_tests(request.node.nodeid, "gc-standin-", "globus_compute_sdk.sdk.executor.")
    user_dir = Path(tmp_path_factory.mktemp("gc")) / "globus_compute"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLOBUS_COMPUTE_CLIENT_ID", CLIENT_ID)
        mp.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", CLIENT_SECRET)
        mp.setenv("GLOBUS_COMPUTE_USER_DIR", str(user_dir))
        mp.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", "http://127.0.0.1:5000/")
        mp.delenv("GLOBUS_SDK_ENVIRONMENT", raising=False)
        with GlobusComputeStandIn([EP], client_id=CLIENT_ID,
                                  client_secret=CLIENT_SECRET) as svc:
            try:
                yield svc
            finally:
                from funcx_flows.prefect._remote import registry

                registry.close()
