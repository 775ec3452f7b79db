"""A stand-in for the Globus Transfer API on 127.0.0.1, for globus-sdk's real TransferClient.

Its documents are globus-sdk's own fixtures (``globus_sdk.testing``) with the ids
and fields of the tasks it plays: submission ids, submissions (``Accepted``, or
``Duplicate`` with the first task for a reused submission id), task documents,
event lists and cancellation. A test scripts what each new task shows on its
successive polls (``plan``) and what goes wrong on the wire (``inject``: 429,
5xx, answers held back, connections dropped, before or after the request took
effect). Everything seen is recorded, and ``wait_for`` blocks on it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import globus_sdk
from globus_sdk.testing import get_response_set

_TC = globus_sdk.TransferClient
TASK_TEMPLATE = get_response_set(_TC.task_list).lookup("default").json["DATA"][0]
SUBMIT_TEMPLATE = get_response_set(_TC.submit_transfer).lookup("default").json
REFUSED_TEMPLATE = get_response_set(_TC.submit_transfer).lookup("failure").json
CANCEL_TEMPLATE = get_response_set(_TC.cancel_task).lookup("default").json


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


# What a task shows on one poll: fields of the task document, plus "events" to add.
def active(done: int = 0, **extra: Any) -> dict[str, Any]:
    return {"status": "ACTIVE", "files_transferred": done, "bytes_transferred": done * 100,
            "nice_status": "OK", "nice_status_short_description": "OK",
            "nice_status_details": None, "is_ok": True, **extra}


def fault(code: str, short: str, details: str, **extra: Any) -> dict[str, Any]:
    return active(nice_status=code, nice_status_short_description=short,
                  nice_status_details=details, is_ok=False, **extra)


def inactive(short: str, **extra: Any) -> dict[str, Any]:
    return {"status": "INACTIVE", "nice_status": None, "nice_status_short_description": short,
            "nice_status_details": None, "is_ok": False, **extra}


def succeeded() -> dict[str, Any]:
    return {"status": "SUCCEEDED", "files_transferred": -1, "nice_status": None,
            "nice_status_short_description": None, "is_ok": None}


def failed(code: str, description: str) -> dict[str, Any]:
    return {"status": "FAILED", "nice_status": None, "is_ok": None,
            "fatal_error": {"code": code, "description": description}}


def event(code: str, description: str, details: str = "", is_error: bool = True) -> dict[str, Any]:
    return {"DATA_TYPE": "event", "code": code, "description": description, "details": details,
            "is_error": is_error, "time": time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime())}


class _ClosingServer(ThreadingHTTPServer):
    """Ends its handler threads when closed: a client that keeps its connection alive
    (a cached SDK client) would otherwise hold one in a read for ever."""

    daemon_threads = False
    block_on_close = True  # server_close joins the handler threads

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        with self._open_lock:
            still_open = list(self._open)
        for conn in still_open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        super().server_close()


@dataclass
class Task:
    task_id: str
    submission_id: str
    body: dict[str, Any]
    script: list[dict[str, Any]]
    doc: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    step: int = 0
    polls: int = 0
    cancelled: bool = False

    def advance(self) -> dict[str, Any]:
        self.polls += 1
        if not self.cancelled and self.script:
            update = dict(self.script[min(self.step, len(self.script) - 1)])
            if self.step < len(self.script):
                self.events.extend(update.pop("events", []))
            else:
                update.pop("events", None)
            self.step += 1
            if update.get("files_transferred") == -1:  # "all of them"
                update["files_transferred"] = self.doc["files"]
                update["bytes_transferred"] = self.doc["files"] * 100
            self.doc.update(update)
            if update.get("status") in ("SUCCEEDED", "FAILED"):
                self.doc["completion_time"] = now_iso()
        return copy.deepcopy(self.doc)


@dataclass
class Injection:
    """A wrong answer to requests matching ``method`` and ``path`` (a regex)."""

    method: str
    path: str
    status: int = 502
    code: str = "ServiceUnavailable"
    message: str = "the service is busy"
    times: int | None = None  # None: every time
    hold: bool = False  # keep the request unanswered until released, then drop it
    drop: bool = False  # close the connection without an answer
    after: bool = False  # let the request take effect first, then answer wrongly
    retry_after: int | None = None
    used: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (method == self.method and re.search(self.path, path) is not None
                and (self.times is None or self.used < self.times))


class TransferStandIn:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.tasks: dict[str, Task] = {}
        self.by_submission: dict[str, str] = {}
        self.issued: set[str] = set()
        self.plans: deque[list[dict[str, Any]]] = deque()
        self.injections: list[Injection] = []
        self.log: list[tuple[str, str, int | str]] = []  # (method, path, answer)
        self.held = 0
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- the test's side -----------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def client(self, **kwargs: Any) -> globus_sdk.TransferClient:
        return globus_sdk.TransferClient(base_url=self.url, **kwargs)

    def plan(self, *steps: dict[str, Any]) -> None:
        """What the next new task shows on its successive polls (the last step repeats)."""
        with self.lock:
            self.plans.append(list(steps))

    def inject(self, method: str, path: str, **kwargs: Any) -> Injection:
        injection = Injection(method, path, **kwargs)
        with self.lock:
            self.injections.append(injection)
        return injection

    def clear_injections(self) -> None:
        with self.lock:
            self.injections.clear()

    def release(self) -> None:
        self._release.set()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        with self.lock:
            if not self.lock.wait_for(predicate, timeout):
                raise AssertionError(f"stand-in: condition not met in {timeout}s; log tail: "
                                     f"{self.log[-10:]}")

    def created(self) -> list[Task]:
        with self.lock:
            return list(self.tasks.values())

    def answers(self, method: str, pattern: str) -> list[int | str]:
        with self.lock:
            return [a for m, p, a in self.log if m == method and re.search(pattern, p)]

    def script(self, task_id: str, *steps: dict[str, Any]) -> None:
        """From now on, ``task_id`` shows these steps."""
        with self.lock:
            task = self.tasks[task_id]
            task.script, task.step = list(steps), 0

    # -- the API ---------------------------------------------------------------------

    def _new_task(self, sid: str, body: dict[str, Any]) -> Task:
        task_id = str(uuid.uuid4())
        doc = copy.deepcopy(TASK_TEMPLATE)
        doc.update(DATA_TYPE="task", task_id=task_id, label=body.get("label"),
                   source_endpoint_id=body["source_endpoint"],
                   destination_endpoint_id=body["destination_endpoint"],
                   files=len(body["DATA"]), files_transferred=0, bytes_transferred=0,
                   status="ACTIVE", nice_status="Queued",
                   nice_status_short_description="Queued", nice_status_details=None,
                   nice_status_expires_in=-1, fatal_error=None, completion_time=None,
                   request_time=now_iso(), is_ok=True, is_paused=False, faults=0,
                   sync_level=body.get("sync_level"),
                   verify_checksum=body.get("verify_checksum"))
        plan = self.plans.popleft() if self.plans else [active(), succeeded()]
        task = Task(task_id, sid, body, plan, doc)
        self.tasks[task_id] = task
        self.by_submission[sid] = task_id
        return task

    def handle(self, method: str, path: str, body: dict[str, Any] | None,
               query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """One request, under the lock: (status, document)."""
        if method == "GET" and path == "/v0.10/submission_id":
            sid = str(uuid.uuid4())
            self.issued.add(sid)
            return 200, {"value": sid}
        if method == "POST" and path == "/v0.10/transfer":
            return self._submit(body or {})
        m = re.fullmatch(r"/v0\.10/task/([^/]+)(/cancel|/event_list)?", path)
        if m is None or m.group(1) not in self.tasks:
            return 404, {"code": "ClientError.NotFound", "message": f"{path} not found",
                         "request_id": "standin", "resource": path}
        task = self.tasks[m.group(1)]
        if method == "GET" and m.group(2) is None:
            return 200, task.advance()
        if method == "GET" and m.group(2) == "/event_list":
            limit = int(query.get("limit", ["10"])[0])
            offset = int(query.get("offset", ["0"])[0])
            newest = list(reversed(task.events))
            page = newest[offset:offset + limit]
            return 200, {"DATA_TYPE": "event_list", "DATA": page, "length": len(page),
                         "limit": limit, "offset": offset, "total": len(newest)}
        if method == "POST" and m.group(2) == "/cancel":
            answer = dict(CANCEL_TEMPLATE, resource=f"/task/{task.task_id}/cancel")
            if task.doc["status"] in ("SUCCEEDED", "FAILED"):
                return 200, dict(answer, code="TaskComplete",
                                 message="The task completed before it could be cancelled.")
            task.cancelled = True
            task.doc.update(failed("CANCELED", "The task was canceled by its owner"),
                            completion_time=now_iso())
            task.events.append(event("CANCELED", "Task canceled", is_error=False))
            return 200, answer
        return 405, {"code": "ClientError.MethodNotAllowed", "message": method,
                     "request_id": "standin", "resource": path}

    def _submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        sid = body.get("submission_id")
        if body.get("DATA_TYPE") != "transfer" or sid not in self.issued:
            return 400, {"code": "ClientError.BadRequest",
                         "message": f"not a transfer document with an issued submission id: "
                                    f"{sid!r}", "request_id": "standin",
                         "resource": "/v0.10/transfer"}
        if not body.get("DATA"):
            return 400, REFUSED_TEMPLATE
        answer = dict(SUBMIT_TEMPLATE, submission_id=sid)
        if sid in self.by_submission:
            task_id = self.by_submission[sid]
            return 200, dict(answer, code="Duplicate", task_id=task_id,
                             message=f"A transfer with submission id {sid} was already "
                                     "submitted", task_link=dict(
                                         SUBMIT_TEMPLATE["task_link"],
                                         href=f"/v0.10/task/{task_id}?format=json"))
        task = self._new_task(sid, body)
        return 202, dict(answer, task_id=task.task_id, task_link=dict(
            SUBMIT_TEMPLATE["task_link"], href=f"/v0.10/task/{task.task_id}?format=json"))

    # -- the server ------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[TransferStandIn]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, doc: dict[str, Any],
                        headers: dict[str, str] | None = None) -> None:
                data = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up on a held answer
                    self.close_connection = True

            def _serve(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with standin.lock:
                    injection = next((i for i in standin.injections
                                      if i.matches(method, url.path)), None)
                    if injection is not None:
                        injection.used += 1
                    if injection is None or injection.after:
                        status, doc = standin.handle(method, url.path, body,
                                                     parse_qs(url.query))
                    if injection is not None:
                        outcome: int | str = ("held" if injection.hold else
                                              "dropped" if injection.drop else
                                              injection.status)
                    else:
                        outcome = status
                    standin.log.append((method, url.path, outcome))
                    if injection is not None and injection.hold:
                        standin.held += 1
                    standin.lock.notify_all()
                if injection is None:
                    self._answer(status, doc)
                elif injection.hold:
                    standin._release.wait(120)
                    with standin.lock:
                        standin.held -= 1
                        standin.lock.notify_all()
                    self.close_connection = True
                elif injection.drop:
                    self.close_connection = True
                else:
                    headers = ({"Retry-After": str(injection.retry_after)}
                               if injection.retry_after is not None else None)
                    self._answer(injection.status, {
                        "code": injection.code, "message": injection.message,
                        "request_id": "standin", "resource": url.path}, headers)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        self._server = _ClosingServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release()
            self._server.shutdown()
            self._server.server_close()
            thread.join(10)
