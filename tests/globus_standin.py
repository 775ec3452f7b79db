"""A local stand-in for Globus Transfer's task API, served on 127.0.0.1 for the
real ``globus_sdk.TransferClient`` (``TransferClient(base_url=standin.url)``).

It keeps the limits that globus-sdk encodes and the service enforces, so that a
trigger that works here cannot rely on more than Transfer gives:

- ``GET /v0.10/task_list``: the caller's own tasks; ``limit`` at most 1000 and
  ``offset + limit`` at most 1000 (a 400 otherwise: one listing never reaches
  past its first 1,000 matches), ``total`` counts every match. Filter clauses
  ``type``, ``status``, ``task_id``, ``label`` (exact), ``request_time`` and
  ``completion_time`` ("START,END", one-second resolution, both ends inclusive,
  either end blank); ``orderby`` on those times or the label.
- ``GET /v0.10/endpoint_manager/task_list``: everyone's tasks on an endpoint,
  paged by ``last_key`` (keyset paging, stable while tasks arrive; newest first
  by default, so that a client cannot lean on the order), ``limit`` default 10,
  at most 1000; ``filter_endpoint`` (required for finished tasks),
  ``filter_endpoint_use``, ``filter_status``, ``filter_completion_time``.
- ``GET .../task/<id>/successful_transfers`` for both, marker paging.
- ``POST /v2/oauth2/token`` (client credentials, when it is also the Auth URL).

Faults on demand: ``fail(status, count, kind)`` answers the next requests of a
kind with 429 (JSON, as Transfer) or 502 (an HTML page, as a proxy); ``hold``
keeps answers back until ``release``. Late indexing: ``add(..., visible=False)``
stores a task that no listing shows until ``reveal``.

It plays the side of Transfer that the trigger reads (listings and file lists);
``tests/transfer_standin.py`` plays the side the transfer step drives (submissions,
task documents, events, cancels).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

DEST = "faa48700-e885-4f84-b0cc-03008aaa1266"  # the watched collection
SOURCE = "b0e4e5ea-2c12-4e1f-8bb4-d1ad4a9e7a51"  # where transfers come from
ELSEWHERE = "3d5e6f7a-0b1c-4d2e-8f90-a1b2c3d4e5f6"  # neither
ME = "6a1d2c3b-0000-4000-8000-00000000a11c"  # the trigger's identity
CAP = 1000  # task_list: limit and offset + limit (globus-sdk's max_total_results)
_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(Z|[+-]00:00)?$")
KINDS = ("task_list", "em_task_list", "files", "token")


def iso(epoch: float) -> str:
    """A time as Transfer writes it: whole seconds, UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))


def fired_tasks(state_db: str | Path) -> list[str]:
    """The transfer task of every run in a trigger state database, one entry per run
    (a task fired twice shows twice)."""
    db = sqlite3.connect(state_db)
    try:
        rows = db.execute("SELECT json_extract(context, '$.task_id') FROM runs").fetchall()
    finally:
        db.close()
    return [str(r[0]) for r in rows if r[0] is not None]


class BadRequest(Exception):
    pass


def _bound(text: str) -> int | None:
    """A filter date as whole seconds since the epoch (None when blank)."""
    text = text.strip()
    if not text:
        return None
    m = _TIME.match(text)
    if m is None:
        raise BadRequest(f"invalid date {text!r}: use YYYY-MM-DDTHH:MM:SS (UTC)")
    return int(datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}+00:00").timestamp())


def _range(text: str) -> tuple[int | None, int | None]:
    start, sep, end = text.partition(",")
    lo, hi = _bound(start), _bound(end)
    if not sep or (lo is None and hi is None):
        raise BadRequest(f"invalid range {text!r}: expected START,END with one end given")
    return lo, hi


@dataclass
class Task:
    task_id: str
    completed: float | None  # epoch (sub-second: the true instant, for the benchmark)
    requested: float
    label: str
    files: list[str]
    status: str = "SUCCEEDED"
    type: str = "TRANSFER"
    source: str = SOURCE
    destination: str = DEST
    owner: str = ME
    visible: bool = True
    seq: int = 0

    def doc(self) -> dict[str, Any]:
        return {"DATA_TYPE": "task", "task_id": self.task_id, "type": self.type,
                "status": self.status, "label": self.label or None, "owner_id": self.owner,
                "request_time": iso(self.requested),
                "completion_time": None if self.completed is None else iso(self.completed),
                "source_endpoint_id": self.source, "destination_endpoint_id": self.destination,
                "files": len(self.files), "faults": 0, "is_paused": False}


@dataclass
class _Fault:
    status: int
    count: int
    kind: str
    after: int  # requests of the kind to let through first


@dataclass
class Stats:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (kind, path?query)
    files_by_task: Counter[str] = field(default_factory=Counter)
    files_in_flight: int = 0
    files_max_in_flight: int = 0
    answers: Counter[int] = field(default_factory=Counter)  # by HTTP status
    auth_headers: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.requests if k == kind)


class TransferStandIn:
    """Transfer's task API over HTTP on 127.0.0.1; use as a context manager."""

    def __init__(self, *, em_newest_first: bool = True, files_page_size: int = 100,
                 page_size: int = CAP, files_delay_s: float = 0.0,
                 honour_endpoint_use: bool = True) -> None:
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()
        self.stats = Stats()
        self.em_newest_first = em_newest_first
        self.files_page_size = files_page_size
        self.page_size = page_size  # what one task_list answer holds at most
        self.files_delay_s = files_delay_s
        self.honour_endpoint_use = honour_endpoint_use
        self._faults: list[_Fault] = []
        self._holds: Counter[str] = Counter()
        self._release = threading.Event()
        self.holding = threading.Event()  # set while an answer is held back
        self._seq = 0
        self._connections: set[socket.socket] = set()  # kept alive, closed on exit
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="transfer-standin")
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> TransferStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            for conn in self._connections:  # ends the threads of kept-alive connections
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    # ------------------------------------------------------------ the data --

    def add(self, task_id: str | None = None, *, completed: float | None = None,
            requested: float | None = None, label: str = "", files: Iterable[str] = (),
            status: str = "SUCCEEDED", type: str = "TRANSFER", source: str = SOURCE,
            destination: str = DEST, owner: str = ME, visible: bool = True) -> str:
        """Store a task (``completed``: epoch seconds, default now; None while ACTIVE)."""
        task_id = task_id or str(uuid.uuid4())
        now = time.time()
        done = now if completed is None and status in ("SUCCEEDED", "FAILED") else completed
        with self.lock:
            self._seq += 1
            self.tasks[task_id] = Task(
                task_id, done, requested if requested is not None else (done or now) - 1.0,
                label, list(files), status, type, source, destination, owner, visible,
                self._seq)
        return task_id

    def reveal(self, task_ids: Iterable[str]) -> None:
        """Late indexing: these tasks show up in listings from now on."""
        with self.lock:
            for t in task_ids:
                self.tasks[t].visible = True

    def fail(self, status: int, count: int = 1, kind: str = "any", after: int = 0) -> None:
        """``count`` requests of ``kind`` (see KINDS, or "any") get ``status``, once
        ``after`` more of them were answered normally."""
        with self.lock:
            self._faults.append(_Fault(status, count, kind, after))

    def heal(self) -> None:
        """No more injected failures."""
        with self.lock:
            self._faults.clear()

    def hold(self, kind: str, count: int = 1) -> None:
        """The next ``count`` requests of ``kind`` wait for ``release()``."""
        with self.lock:
            self._release.clear()
            self._holds[kind] += count

    def release(self) -> None:
        with self.lock:
            self._holds.clear()
        self._release.set()

    # ----------------------------------------------------------- listings --

    def _visible(self) -> Iterator[Task]:
        return (t for t in self.tasks.values() if t.visible)

    def task_list(self, q: dict[str, str]) -> dict[str, Any]:
        limit, offset = int(q.get("limit", "10")), int(q.get("offset", "0"))
        if limit < 1 or limit > CAP or offset < 0 or offset + limit > CAP:
            raise BadRequest(f"limit {limit}, offset {offset}: limit must be 1-{CAP} and "
                             f"offset + limit at most {CAP}")
        match = self._task_filter(q.get("filter", ""))
        found = [t for t in self._visible() if t.owner == ME and match(t)]
        for key, desc in reversed(self._orderby(q.get("orderby", ""))):
            found.sort(key=key, reverse=desc)
        page = [t.doc() for t in found[offset:offset + min(limit, self.page_size)]]
        return {"DATA_TYPE": "task_list", "DATA": page, "length": len(page), "limit": limit,
                "offset": offset, "total": len(found)}

    @staticmethod
    def _orderby(text: str) -> list[tuple[Any, bool]]:
        keys = {"completion_time": lambda t: t.completed or 0.0,
                "request_time": lambda t: t.requested, "label": lambda t: t.label}
        out = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, direction = part.partition(" ")
            if name not in keys or direction.upper() not in ("", "ASC", "DESC"):
                raise BadRequest(f"invalid orderby {part!r}")
            out.append((keys[name], direction.upper() == "DESC"))
        return out

    @staticmethod
    def _task_filter(text: str) -> Any:
        checks = []
        for clause in filter(None, text.split("/")):
            key, sep, value = clause.partition(":")
            if not sep:
                raise BadRequest(f"invalid filter clause {clause!r}")
            if key in ("type", "status", "task_id"):
                allowed = set(value.split(","))
                checks.append(lambda t, k=key, a=allowed: getattr(
                    t, "task_id" if k == "task_id" else k) in a)
            elif key == "label":
                exact = value.removeprefix("=")
                checks.append(lambda t, v=exact: t.label == v)
            elif key in ("request_time", "completion_time"):
                lo, hi = _range(value)
                attr = "requested" if key == "request_time" else "completed"
                checks.append(lambda t, a=attr, lo=lo, hi=hi: _within(getattr(t, a), lo, hi))
            else:
                raise BadRequest(f"unknown filter {key!r}")
        return lambda t: all(c(t) for c in checks)

    def em_task_list(self, q: dict[str, str]) -> dict[str, Any]:
        limit = int(q.get("limit", "10"))
        if limit < 1 or limit > CAP:
            raise BadRequest(f"limit must be 1-{CAP}")
        statuses = set(filter(None, q.get("filter_status", "").split(",")))
        endpoint, use = q.get("filter_endpoint"), q.get("filter_endpoint_use")
        if not endpoint and not (statuses and statuses <= {"ACTIVE", "INACTIVE"}):
            raise BadRequest("filter_endpoint is required for finished tasks")
        if use and (not endpoint or use not in ("source", "destination")):
            raise BadRequest("filter_endpoint_use needs filter_endpoint and is source or "
                             "destination")
        lo = hi = None
        if "filter_completion_time" in q:
            lo, hi = _range(q["filter_completion_time"])

        def match(t: Task) -> bool:
            if statuses and t.status not in statuses:
                return False
            if endpoint:
                ends = {"source": {t.source}, "destination": {t.destination}}.get(
                    use or "" if self.honour_endpoint_use else "", {t.source, t.destination})
                if endpoint not in ends:
                    return False
            if "filter_completion_time" in q:
                return (t.completed is None and hi is None) or _within(t.completed, lo, hi)
            return True

        def key(t: Task) -> tuple[float, int]:
            return (t.completed or float("inf"), t.seq)

        found = sorted((t for t in self._visible() if match(t)), key=key,
                       reverse=self.em_newest_first)
        if q.get("last_key"):
            done, seq = q["last_key"].split(",")
            after = (float(done), int(seq))
            found = [t for t in found if (key(t) < after if self.em_newest_first
                                          else key(t) > after)]
        page = found[:limit]
        last = page[-1] if page else None
        return {"DATA_TYPE": "task_list", "DATA": [t.doc() for t in page],
                "has_next_page": len(found) > limit,
                "last_key": None if last is None else f"{key(last)[0]!r},{last.seq}"}

    def files(self, task_id: str, q: dict[str, str], manager: bool) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None or not task.visible or (not manager and task.owner != ME):
            raise _NotFound(f"task {task_id} not found")
        marker = int(q.get("marker", "0") or 0)
        items = task.files[marker:marker + self.files_page_size]
        more = marker + len(items) < len(task.files)
        return {"DATA_TYPE": "successful_transfers", "marker": marker,
                "next_marker": marker + len(items) if more else None,
                "DATA": [{"DATA_TYPE": "successful_transfer", "source_path": f"/src{p}",
                          "destination_path": p} for p in items]}

    # -------------------------------------------------------------- HTTP --

    def _take_fault(self, kind: str) -> int | None:
        with self.lock:
            for f in self._faults:
                if f.count and f.kind in (kind, "any"):
                    if f.after:
                        f.after -= 1
                        return None
                    f.count -= 1
                    return f.status
        return None

    def _wait_if_held(self, kind: str) -> None:
        with self.lock:
            held = self._holds[kind] > 0
            if held:
                self._holds[kind] -= 1
        if held:
            self.holding.set()
            self._release.wait(60)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Transfer and the SDK's session

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()  # headers and body leave in two writes: no Nagle delay
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with standin.lock:
                    standin._connections.add(self.connection)

            def finish(self) -> None:
                with standin.lock:
                    standin._connections.discard(self.connection)
                super().finish()

            def _send(self, code: int, body: dict[str, Any] | str) -> None:
                html = isinstance(body, str)
                data = (body if html else json.dumps(body)).encode()
                with standin.lock:
                    standin.stats.answers[code] += 1
                self.send_response(code)
                self.send_header("Content-Type", "text/html" if html else "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, name: str, message: str) -> None:
                self._send(code, {"code": name, "message": message, "request_id": "standin"})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                parts = url.path.strip("/").split("/")
                manager = len(parts) > 1 and parts[1] == "endpoint_manager"
                kind = ("files" if parts[-1] == "successful_transfers" else
                        "em_task_list" if manager else "task_list")
                s = standin.stats
                with standin.lock:
                    s.requests.append((kind, self.path))
                    s.auth_headers.append(self.headers.get("Authorization", ""))
                    if kind == "files":
                        s.files_by_task[parts[-2]] += 1
                        s.files_in_flight += 1
                        s.files_max_in_flight = max(s.files_max_in_flight, s.files_in_flight)
                try:
                    self._answer(kind, parts, q, manager)
                finally:
                    if kind == "files":
                        with standin.lock:
                            s.files_in_flight -= 1

            def _answer(self, kind: str, parts: list[str], q: dict[str, str],
                        manager: bool) -> None:
                standin._wait_if_held(kind)
                status = standin._take_fault(kind)
                if status == 429:
                    return self._error(429, "RequestLimitExceeded", "slow down")
                if status is not None:
                    return self._send(status, f"<html><body><h1>{status}</h1></body></html>")
                try:
                    if kind == "files":
                        return self._files(parts[-2], q, manager)
                    if parts[-1] != "task_list":
                        return self._error(404, "ClientError.NotFound", self.path)
                    with standin.lock:
                        body = (standin.em_task_list(q) if manager else standin.task_list(q))
                    self._send(200, body)
                except BadRequest as exc:
                    self._error(400, "ClientError.BadRequest", str(exc))

            def _files(self, task_id: str, q: dict[str, str], manager: bool) -> None:
                if standin.files_delay_s:
                    time.sleep(standin.files_delay_s)  # a slow answer, not a test's wait
                try:
                    with standin.lock:
                        body = standin.files(task_id, q, manager)
                    self._send(200, body)
                except _NotFound as exc:
                    self._error(404, "TaskNotFound", str(exc))

            def do_POST(self) -> None:  # Globus Auth's token endpoint, for client credentials
                with standin.lock:
                    standin.stats.requests.append(("token", self.path))
                if self.path.endswith("/v2/oauth2/token"):
                    self._send(200, {"access_token": "service-token", "expires_in": 3600,
                                     "resource_server": "transfer.api.globus.org",
                                     "token_type": "Bearer", "scope": "urn:globus:auth:scope:"
                                     "transfer.api.globus.org:all", "other_tokens": []})
                else:
                    self._error(404, "NotFound", self.path)

        return Handler


class _NotFound(Exception):
    pass


def _within(value: float | None, lo: int | None, hi: int | None) -> bool:
    """One-second resolution: a time is compared by its whole second."""
    if value is None:
        return False
    second = int(value)
    return (lo is None or second >= lo) and (hi is None or second <= hi)
