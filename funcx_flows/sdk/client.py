"""The REST client: one request path owns URLs, auth and turning answers into errors.

Every call goes through ``Client._request``; an HTTP error answer becomes the
``funcx_flows.errors`` class named by its ``code`` (or by its status when the
body is not ours), and a transport failure becomes ``ServiceUnavailable``.

(Past 400 lines on purpose: one class holds the calls of every resource, as
globus-sdk's and Globus Compute's clients do, so that a user finds them in one
place, and each call is a few lines over the one request path.)
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import httpx
import msgspec

from funcx_flows import serialize, tls
from funcx_flows.errors import (
    ConfigError,
    FuncxFlowsError,
    NotFound,
    ServiceError,
    ServiceUnavailable,
    code_for_status,
    error_from_code,
)
from funcx_flows.home import home_dir
from funcx_flows.retry import Backoff, RetryPolicy
from funcx_flows.sdk.batch import Batch, b64decode, b64encode, function_id_of
from funcx_flows.sdk.results import TERMINAL_STATES, original_exception, result_from_record

__all__ = ["TERMINAL_STATES", "Batch", "Client", "b64decode", "b64encode",
           "original_exception", "result_from_record"]

_TRANSIENT = frozenset({502, 503, 504})  # a proxy without a service, a busy database



# Request bodies are encoded with msgspec: several times faster than the json module
# httpx uses, which shows with payloads of megabytes (their base64 text is ~4/3 of that).
_encode_json = msgspec.json.Encoder().encode
_JSON_HEADERS = {"Content-Type": "application/json"}


def unreachable(url: str, exc: BaseException) -> ServiceUnavailable:
    """A transport failure as one line: a TLS problem named, a plain-HTTP client at a
    TLS port told so, else the cause."""
    why = tls.describe(exc, url)
    if why is None and url.startswith("http://") and isinstance(
            exc, httpx.RemoteProtocolError | httpx.ReadError):
        why = (f"{url} closed the connection without an HTTP answer (if it serves TLS, "
               "use https://)")
    return ServiceUnavailable(why or f"cannot reach the funcx-flows service at {url}: {exc}")


def _service_url_from_home(home: Path) -> str | None:
    info = home / "service" / "service.json"
    try:
        url = json.loads(info.read_text()).get("url")
    except (OSError, ValueError):
        return None
    return str(url) if url else None


def _token_from_home(home: Path) -> str | None:
    try:
        return (home / "token").read_text().strip() or None
    except OSError:
        return None


class Client:
    """Talks to a funcx-flows service.

    ``service_url`` defaults to ``$FUNCX_FLOWS_SERVICE_URL``, then to the local
    service recorded in ``<home>/service/service.json``; ``token`` defaults to
    ``$FUNCX_FLOWS_TOKEN``, then to ``<home>/token``.
    """

    def __init__(
        self,
        service_url: str | None = None,
        token: str | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        """``retry``: for requests that meet a restarting proxy or service (default:
        8 tries over about 15 s). ``ca_bundle``: a CA file to trust besides the
        system's (default ``$FUNCX_FLOWS_CA_BUNDLE``, then ``$SSL_CERT_FILE``)."""
        h = home_dir(home)
        url = service_url or os.environ.get("FUNCX_FLOWS_SERVICE_URL") or _service_url_from_home(h)
        if not url:
            raise ConfigError(
                "no service URL: pass service_url=, set FUNCX_FLOWS_SERVICE_URL, "
                "or start a local service with `funcx-flows service start`"
            )
        tok = token or os.environ.get("FUNCX_FLOWS_TOKEN") or _token_from_home(h)
        if not tok:
            raise ConfigError(
                f"no API token: pass token=, set FUNCX_FLOWS_TOKEN, or create one with "
                f"`funcx-flows token create` (looked in {h / 'token'})"
            )
        self.service_url = url.rstrip("/")
        self.token = tok
        self.retry = retry or RetryPolicy(initial=0.2, max_delay=4.0, max_attempts=8)
        self.ca_bundle = ca_bundle  # for the result stream too
        self._http = httpx.Client(
            base_url=self.service_url + "/v1",
            headers={"Authorization": f"Bearer {tok}"},
            timeout=timeout,
            transport=transport,
            verify=tls.client_context(ca_bundle),
        )
        self._function_ids: weakref.WeakKeyDictionary[Callable[..., Any], str] = (
            weakref.WeakKeyDictionary()
        )
        self._memo_function_ids: weakref.WeakKeyDictionary[Callable[..., Any], str] = (
            weakref.WeakKeyDictionary()
        )
        self._function_ids_by_hash: dict[str, str] = {}
        self._endpoint_ids: dict[str, str] = {}

    # ------------------------------------------------------------ plumbing --

    def _request(self, method: str, path: str, *, json_body: Any = None,
                 params: Mapping[str, Any] | None = None) -> Any:
        """One request; a proxy restarting, a replica going away or a database that
        cannot be written for a moment (a transport error, 502, 503, 504) is tried
        again on the client's retry policy. The requests of this API are idempotent
        (ids are chosen here; registrations are by content and by name) but for a new
        token and a delete (whose repeat would answer 404): those are tried again only
        when they cannot have left."""
        content = None if json_body is None else _encode_json(json_body)
        headers = None if content is None else _JSON_HEADERS
        once = method == "DELETE" or (method == "POST" and path == "/tokens")
        backoff = Backoff(self.retry)
        while True:
            try:
                response = self._http.request(method, path, content=content, params=params,
                                              headers=headers)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if (once and sent) or self.retry.exhausted(backoff.attempt) \
                        or tls.describe(exc, self.service_url):  # a TLS problem stays
                    raise unreachable(self.service_url, exc) from exc
                self.retry.sleep(backoff.failed())
                continue
            if response.status_code in _TRANSIENT and not once \
                    and not self.retry.exhausted(backoff.attempt):
                self.retry.sleep(backoff.failed())
                continue
            break
        if response.status_code >= 400:
            raise self._error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return msgspec.json.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ServiceError(f"the service answered {method} {path} with invalid JSON: "
                               f"{exc}") from exc

    @staticmethod
    def _error_from_response(response: httpx.Response) -> FuncxFlowsError:
        try:
            body = response.json()
            err = body["error"]
            code, message = str(err["code"]), str(err["message"])
            details = err.get("details") or {}
        except (ValueError, KeyError, TypeError):
            code = code_for_status(response.status_code)
            message = f"HTTP {response.status_code}: {response.text[:500]}"
            details = {}
        exc = error_from_code(code, message, details=details)
        if not isinstance(exc, ServiceError):
            # A task-level code answered by a route: still a refusal of the request.
            exc = error_from_code(code_for_status(response.status_code),
                                  message, details=details)
        exc.details.setdefault("http_status", response.status_code)
        return exc

    @property
    def websocket_url(self) -> str:
        base = self.service_url
        if base.startswith("https://"):
            return "wss://" + base[len("https://"):]
        return "ws://" + base.removeprefix("http://")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------- identity --

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/whoami")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    # ---------------------------------------------------------- functions --

    def register_function(self, function: Callable[..., Any], name: str | None = None,
                          description: str = "", memoize: bool = False) -> str:
        """Register ``function`` (or find it already registered) and return its id.

        Registration is by content: the same function body is registered once,
        and the id is cached on the function object for later calls. With
        ``memoize``, repeated calls with identical arguments are answered from the
        stored result of the first successful one, without running."""
        if not callable(function):
            raise TypeError(f"register_function takes a function, not {type(function).__name__} "
                            f"{function!r}")
        cache = self._memo_function_ids if memoize else self._function_ids
        try:
            cached = cache.get(function)
        except TypeError:
            cached = None
        if cached is not None:
            return cached
        data = serialize.pack_function(function)
        digest = serialize.content_hash(data) + (":memo" if memoize else "")
        function_id = self._function_ids_by_hash.get(digest)
        if function_id is None:
            body = {
                "name": name or getattr(function, "__qualname__", None) or repr(function),
                "function": b64encode(data),
                "description": description,
                "memoize": memoize,
            }
            function_id = str(self._request("POST", "/functions", json_body=body)["function_id"])
            self._function_ids_by_hash[digest] = function_id
        with contextlib.suppress(TypeError):
            cache[function] = function_id
        return function_id

    def get_function(self, function_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/functions/{function_id}")
        return result

    def list_functions(self, shared: bool = False) -> list[dict[str, Any]]:
        """Your functions; with ``shared``, also those others share with you."""
        params = {"shared": "true"} if shared else None
        return list(self._request("GET", "/functions", params=params)["functions"])

    def delete_function(self, function_id: str) -> None:
        self._request("DELETE", f"/functions/{function_id}")

    # ---------------------------------------------------------- endpoints --

    def register_endpoint(self, name: str, public_key: str,
                          metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = {"name": name, "public_key": public_key, "metadata": dict(metadata or {})}
        result: dict[str, Any] = self._request("POST", "/endpoints", json_body=body)
        return result

    def list_endpoints(self, shared: bool = False) -> list[dict[str, Any]]:
        """Your endpoints; with ``shared``, also those others share with you."""
        params = {"shared": "true"} if shared else None
        return list(self._request("GET", "/endpoints", params=params)["endpoints"])

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/endpoints/{endpoint_id}")
        return result

    def get_endpoint_status(self, endpoint_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/endpoints/{endpoint_id}/status")
        return result

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._request("DELETE", f"/endpoints/{endpoint_id}")

    # ------------------------------------------------------------ sharing --

    def share(self, kind: str, object_id: str, *, users: Iterable[str] = (),
              groups: Iterable[str] = (), public: bool = False) -> dict[str, Any]:
        """Replace whom your function or endpoint (``kind``) is shared with: user
        names (``globus:<username>`` for Globus identities), Globus group ids, or
        everyone. ``share(kind, id)`` with nothing else makes it private again."""
        if kind not in ("function", "endpoint"):
            raise ValueError("kind is 'function' or 'endpoint'")
        result: dict[str, Any] = self._request(
            "PUT", f"/{kind}s/{object_id}/sharing",
            json_body={"users": list(users), "groups": list(groups), "public": public})
        return result

    def report_trigger_status(self, report: Mapping[str, Any]) -> dict[str, Any]:
        """A trigger process's status, for the service's dashboard (POST
        /v1/triggers/status; the fields are in docs/dashboard.md)."""
        result: dict[str, Any] = self._request("POST", "/triggers/status", json_body=report)
        return result

    def get_sharing(self, kind: str, object_id: str) -> dict[str, Any]:
        if kind not in ("function", "endpoint"):
            raise ValueError("kind is 'function' or 'endpoint'")
        result: dict[str, Any] = self._request("GET", f"/{kind}s/{object_id}/sharing")
        return result

    def resolve_endpoint(self, name_or_id: str) -> str:
        """An endpoint id from an id (the service checks access when it is used), or
        from the name of an endpoint of the caller's (else of one shared with them)."""
        if name_or_id in self._endpoint_ids:
            return self._endpoint_ids[name_or_id]
        try:
            return str(uuid.UUID(name_or_id))
        except ValueError:
            pass
        found = sorted(self.list_endpoints(shared=True), key=lambda e: not e.get("owned", True))
        for ep in found:
            if name_or_id == ep["name"]:
                self._endpoint_ids[name_or_id] = str(ep["endpoint_id"])
                return str(ep["endpoint_id"])
        raise NotFound(f"no endpoint named or with id {name_or_id!r} is visible to you")

    # -------------------------------------------------------------- tasks --

    def create_batch(self, endpoint_id: str | None = None, group_id: str | None = None, *,
                     task_group_id: str | uuid.UUID | None = None,
                     resource_specification: Mapping[str, Any] | None = None,
                     create_websocket_queue: bool = False) -> Batch:
        """A batch for ``endpoint_id``, or for the endpoint ``batch_run(endpoint_id,
        batch)`` names later (Globus Compute's way). ``task_group_id`` is Globus
        Compute's name of ``group_id``; ``resource_specification`` its name of the
        tasks' ``resources``; ``create_websocket_queue`` has no use here (every
        result can be streamed)."""
        if group_id and task_group_id and str(group_id) != str(task_group_id):
            raise TypeError("give group_id or task_group_id (its Globus Compute name), "
                            "not both")
        group = group_id or (str(task_group_id) if task_group_id else None)
        ep = None if endpoint_id is None else self.resolve_endpoint(endpoint_id)
        return Batch(endpoint_id=ep, group_id=group, client=self,
                     resources=dict(resource_specification) if resource_specification else None)

    @overload
    def batch_run(self, batch: Batch, /) -> list[str]: ...

    @overload
    def batch_run(self, endpoint_id: str | uuid.UUID, batch: Batch, /) -> dict[str, Any]: ...

    def batch_run(self, *call: Any) -> list[str] | dict[str, Any]:
        """Submit a batch. ``batch_run(batch)`` answers its task ids in order;
        ``batch_run(endpoint_id, batch)`` (Globus Compute's shape) runs it on that
        endpoint and answers as Globus Compute does: ``{"tasks": {function_id:
        [task_id, ...]}, "task_group_id", "endpoint_id", "request_id"}``."""
        if len(call) == 1 and isinstance(call[0], Batch):
            batch = call[0]
            if batch.endpoint_id is None:
                raise TypeError("this batch names no endpoint: batch_run(endpoint_id, batch), "
                                "or create_batch(endpoint_id)")
            return self.submit_tasks(batch.tasks)
        if len(call) != 2 or not isinstance(call[1], Batch) or isinstance(call[0], Batch):
            raise TypeError("batch_run takes (batch) or, as Globus Compute, "
                            "(endpoint_id, batch); got "
                            f"({', '.join(type(c).__name__ for c in call)})")
        endpoint_id, batch = self.resolve_endpoint(str(call[0])), call[1]
        if not batch.tasks:
            raise ValueError("no tasks in the batch: batch.add(function_id, args=...) first")
        tasks = [{**t, "endpoint_id": endpoint_id} for t in batch.tasks]
        task_ids = self.submit_tasks(tasks)
        by_function: dict[str, list[str]] = {}
        for task, task_id in zip(tasks, task_ids, strict=True):
            by_function.setdefault(task["function_id"], []).append(task_id)
        return {"request_id": str(uuid.uuid4()), "task_group_id": batch.group_id,
                "endpoint_id": endpoint_id, "tasks": by_function}

    def submit_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
        """Submit task dicts as in docs/protocol.md; durable when this returns."""
        answer = self._request("POST", "/tasks", json_body={"tasks": list(tasks)})
        return [str(t) for t in answer["task_ids"]]

    def run(self, *args: Any, endpoint_id: str, function_id: str | uuid.UUID | None = None,
            **kwargs: Any) -> str:
        """Run one call on an endpoint; answers its task id. Two shapes:
        ``run(fn_or_function_id, *args, endpoint_id=, **kwargs)``, and Globus
        Compute's ``run(*args, endpoint_id=, function_id=, **kwargs)``. Mixing them
        (a function first and ``function_id=``) is refused, as is a first argument
        that is neither a function nor a function id."""
        if function_id is not None:
            if args and callable(args[0]):
                raise TypeError(
                    "run() got a function and function_id=: give one, "
                    "run(fn, *args, endpoint_id=...) or run(*args, endpoint_id=..., "
                    "function_id=...) (to pass a function as an argument, pass it by name)")
            fid, call_args = function_id_of(function_id, "run(function_id=)"), args
        elif not args:
            raise TypeError("run() needs the function: run(fn, *args, endpoint_id=...), or "
                            "as Globus Compute, run(*args, endpoint_id=..., function_id=...)")
        elif callable(args[0]):
            fid, call_args = self.register_function(args[0]), args[1:]
        else:
            try:
                fid = function_id_of(args[0], "run()")
            except TypeError:
                raise TypeError(
                    f"run()'s first argument is the function to run or its id, not "
                    f"{type(args[0]).__name__} {args[0]!r}: run(fn, *args, endpoint_id=...), "
                    f"or as Globus Compute, run(*args, endpoint_id=..., function_id=...)"
                ) from None
            call_args = args[1:]
        batch = self.create_batch(endpoint_id)
        batch.add(fid, call_args, kwargs)
        return self.batch_run(batch)[0]

    def get_task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/tasks/{task_id}")
        return result

    def fetch_tasks(self, task_ids: Iterable[str]) -> list[dict[str, Any]]:
        answer = self._request("POST", "/tasks/fetch", json_body={"task_ids": list(task_ids)})
        return list(answer["tasks"])

    def list_tasks(self, *, state: str | Iterable[str] | None = None,
                   endpoint_id: str | None = None, function_id: str | None = None,
                   group_id: str | None = None, since: float | datetime | None = None,
                   until: float | datetime | None = None, limit: int = 100,
                   cursor: str | None = None) -> dict[str, Any]:
        """One page of your tasks, newest first: ``{"tasks": [...], "next_cursor": ...}``
        (no results or output: ``get_task`` has them). ``endpoint_id`` may be a name;
        ``since``/``until`` bound when tasks were received (epoch seconds or datetimes,
        naive ones as UTC). Pass ``next_cursor`` back as ``cursor`` for the next page;
        ``iter_tasks`` does that for you."""
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = [state] if isinstance(state, str) else list(state)
        if endpoint_id:
            params["endpoint_id"] = self.resolve_endpoint(endpoint_id)
        for key, value in (("function_id", function_id), ("group_id", group_id),
                           ("cursor", cursor)):
            if value:
                params[key] = value
        for key, when in (("since", since), ("until", until)):
            if isinstance(when, datetime):
                when = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
            if when is not None:
                params[key] = repr(float(when))
        answer: dict[str, Any] = self._request("GET", "/tasks", params=params)
        answer.setdefault("next_cursor", None)
        return answer

    def iter_tasks(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every task ``list_tasks(**filters)`` selects, page after page."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list_tasks(cursor=cursor, **filters)
            yield from page["tasks"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def get_result(self, task_id: str, *, original_exceptions: bool = True) -> Any:
        """The value of a finished task; raises its error, or ``TaskPending``. When
        the function raised, its own exception is raised (``result_from_record``)."""
        return result_from_record(self.get_task(task_id),
                                  original_exceptions=original_exceptions)

    def get_results(self, task_ids: Iterable[str], *,
                    original_exceptions: bool = True) -> dict[str, Any]:
        """Values (or the exceptions) of finished tasks; pending ones are left out."""
        out: dict[str, Any] = {}
        for record in self.fetch_tasks(task_ids):
            if record["state"] not in TERMINAL_STATES:
                continue
            try:
                out[record["task_id"]] = result_from_record(
                    record, original_exceptions=original_exceptions)
            except Exception as exc:  # the task's own error, whatever its type
                out[record["task_id"]] = exc
        return out

    def get_batch_result(self, task_ids: Iterable[str | uuid.UUID]) -> dict[str, dict[str, Any]]:
        """Globus Compute's shape of the tasks' states: ``{task_id: {"pending": bool,
        "status": state, "result": value | "exception": error, "completion_t"}}``;
        a task this service does not know is left out, as there."""
        out: dict[str, dict[str, Any]] = {}
        for record in self.fetch_tasks([str(t) for t in task_ids]):
            state = str(record["state"])
            doc: dict[str, Any] = {"pending": state not in TERMINAL_STATES, "status": state}
            if state in TERMINAL_STATES:
                completed = (record.get("timestamps") or {}).get("completed")
                doc["completion_t"] = "unknown" if completed is None else str(completed)
                try:
                    doc["result"] = result_from_record(record)
                except Exception as exc:  # the task's own error, whatever its type
                    doc["exception"] = exc
            out[str(record["task_id"])] = doc
        return out

    def cancel(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/tasks/{task_id}/cancel")
        return result

    def cancel_many(self, task_ids: Iterable[str]) -> list[str]:
        answer = self._request("POST", "/tasks/cancel", json_body={"task_ids": list(task_ids)})
        return [str(t) for t in answer["cancelled"]]
