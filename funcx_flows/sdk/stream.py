"""A result stream: one WebSocket, one thread, reconnecting by itself.

The service pushes terminal task records of one group; each carries a
completion sequence number. The stream remembers the highest one it has seen
and reconnects with ``after=<seq>`` so that a dropped connection (or a
restarted service) costs nothing but a short wait. Records may then arrive
twice; the consumer drops duplicates by task id.

It can also carry submissions (``try_submit``): one frame and one answer on a
socket that is open anyway, instead of an HTTP request. When it cannot (not
connected, a batch too large for a frame, the link dropped before the answer),
it says so and the caller submits over REST, which is idempotent by task id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from funcx_flows import streamwire as sw
from funcx_flows import tls
from funcx_flows.errors import ProtocolError, ServiceUnavailable, error_from_code
from funcx_flows.retry import Backoff, RetryPolicy
from funcx_flows.wsconn import WsConnection

log = logging.getLogger(__name__)

RecordsCallback = Callable[[list[dict[str, Any]]], None]
# Larger batches go over REST, below the service's frame limit (64 MiB). JSON frames
# carry base64 text, for which REST's request handling is as fast; msgpack frames
# carry the bytes themselves, so a 10 MB argument still goes this way.
SUBMIT_MAX_BYTES = 4 << 20
SUBMIT_MAX_BYTES_BINARY = 48 << 20


class _Answer:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.msg: sw.Submitted | sw.Error | None = None  # None: the link dropped first


class ResultStream:
    def __init__(
        self,
        websocket_url: str,
        token: str,
        on_records: RecordsCallback,
        *,
        group_id: str | None = None,
        retry: RetryPolicy | None = None,
        on_error: Callable[[Exception], None] | None = None,
        binary: bool = False,
        ca_bundle: str | None = None,
        cancel_on_close_s: float | None = None,
    ) -> None:
        """``binary``: msgpack frames both ways, payloads and results as raw bytes
        (``try_submit`` then takes task payloads as bytes); else JSON and base64.
        ``cancel_on_close_s``: the service cancels the group's unfinished tasks when
        this stream stays closed that long (see the service's stream route)."""
        self.binary = binary
        self._ca_bundle = ca_bundle
        self._cancel_on_close_s = cancel_on_close_s
        self._codec = sw.client_codec("msgpack" if binary else "json")
        self._base = websocket_url.rstrip("/") + "/v1/results/stream"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._on_records = on_records
        self._on_error = on_error
        self._group_id = group_id
        self._retry = retry or RetryPolicy(initial=0.05, max_delay=5.0)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._ws: WsConnection | None = None
        self._lock = threading.Lock()
        self.last_seq = 0
        self.reconnects = 0
        self._refs = 0
        self._answers: dict[int, _Answer] = {}
        self._thread = threading.Thread(target=self._run, name="funcx-result-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def _url(self) -> str:
        params: dict[str, Any] = {"after": self.last_seq}
        if self.binary:
            params["encoding"] = "msgpack"
        if self._group_id:
            params["group_id"] = self._group_id
            if self._cancel_on_close_s:
                params["cancel_on_close"] = self._cancel_on_close_s
        return f"{self._base}?{urlencode(params)}"

    def _run(self) -> None:
        backoff = Backoff(self._retry)
        while not self._stop.is_set():
            try:
                # no per-message deflate: it costs more CPU than it saves on loopback
                # and LAN links, and the records are mostly pickles (or their base64)
                ws = WsConnection.open(self._url(), self._headers, timeout=10,
                                       ca_bundle=self._ca_bundle)
                with self._lock:
                    self._ws = ws
                try:
                    if self._stop.is_set():
                        return
                    self._connected.set()
                    backoff.succeeded()
                    self._receive(ws)
                finally:
                    ws.close()
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    log.error("result stream refused (HTTP %s): check the token", status)
                    if self._on_error is not None:
                        from funcx_flows.errors import AuthenticationError

                        self._on_error(AuthenticationError(
                            f"the service refused the result stream (HTTP {status})"))
                    return
                log.warning("result stream refused (HTTP %s); retrying", status)
            except (OSError, WebSocketException, TimeoutError) as exc:
                if self._stop.is_set():
                    return
                problem = tls.describe(exc, self._base)
                if problem is not None:  # trying again would not help: say so, and stop
                    log.error("result stream: %s", problem)
                    if self._on_error is not None:
                        self._on_error(ServiceUnavailable(problem))
                    return
                log.debug("result stream dropped: %s", exc)
            finally:
                with self._lock:
                    self._ws = None
                    answers, self._answers = self._answers, {}
                for answer in answers.values():
                    answer.done.set()  # no answer will come on this connection
                self._connected.clear()
            if self._stop.is_set():
                return
            self.reconnects += 1
            self._stop.wait(backoff.failed())

    def _receive(self, ws: WsConnection) -> None:
        while not self._stop.is_set():
            try:
                frame = ws.recv()
            except ConnectionClosed:
                return
            try:
                msg = self._codec.decode(frame)
            except ProtocolError as exc:
                log.warning("dropped a result-stream frame: %s", exc.message)
                continue
            if isinstance(msg, sw.Results):
                for r in msg.results:
                    seq = int(r.get("seq") or 0)
                    if seq > self.last_seq:
                        self.last_seq = seq
                self._on_records(msg.results)
                continue
            ref = msg.ref
            with self._lock:
                answer = self._answers.pop(ref, None) if isinstance(ref, int) else None
            if answer is not None:
                answer.msg = msg
                answer.done.set()

    def try_submit(self, tasks: list[dict[str, Any]], timeout: float = 60.0) -> list[str] | None:
        """Submit a batch (the body of POST /v1/tasks; payloads as bytes on a binary
        stream) over the stream; the task ids once durable, or None when the stream
        cannot take it. A refusal raises the same error a REST call would."""
        with self._lock:
            self._refs += 1
            ref = self._refs
        frame = self._codec.encode(sw.Submit(ref=ref, tasks=tasks))
        if len(frame) > (SUBMIT_MAX_BYTES_BINARY if self.binary else SUBMIT_MAX_BYTES):
            return None
        answer = _Answer()
        with self._lock:
            ws = self._ws
            if ws is None:
                return None
            self._answers[ref] = answer
        try:
            ws.send(frame)
            answered = answer.done.wait(timeout)
        except (OSError, WebSocketException):
            answered = False
        finally:
            with self._lock:
                self._answers.pop(ref, None)
        msg = answer.msg
        if not answered or msg is None:
            return None
        if isinstance(msg, sw.Submitted):
            return msg.task_ids
        err = msg.error
        raise error_from_code(err.code or "service_error",
                              err.message or "the service refused the batch",
                              details=err.details)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            ws.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
