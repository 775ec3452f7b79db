"""No input can break a read: any sequence of writes, by the owner or a grantee, with
any text, numbers, nesting and id spellings, leaves every read route answering
below 500 for both users, on SQLite and PostgreSQL.

The app runs in-process (FastAPI's TestClient drives it through ASGI, its lifespan
included); the database is real. Bodies go as raw JSON text, so that lone
surrogates, ``Infinity`` and ``NaN`` reach the service as a client could send them.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgurl import PG_URL
from sqlalchemy import text

from funcx_flows import serialize
from funcx_flows.service.app import create_app
from funcx_flows.service.db import make_engine
from funcx_flows.service.settings import ServiceSettings

BODY = base64.b64encode(serialize.pack_function(abs)).decode()
PAYLOAD = base64.b64encode(serialize.pack_call((-3,), {})).decode()


@dataclass
class Service:
    http: TestClient
    tokens: dict[str, str]  # user -> token
    functions: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    made_tokens: list[str] = field(default_factory=list)

    def call(self, who: str, method: str, path: str, body: Any = None) -> Any:
        content = None if body is None else json.dumps(body, allow_nan=True).encode()
        r = self.http.request(method, "/v1" + path, content=content, headers={
            "Authorization": f"Bearer {self.tokens[who]}",
            "Content-Type": "application/json"})
        assert r.status_code < 500, (method, path, body, r.status_code, r.text)
        return r.json() if r.status_code == 200 else None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            need) -> Iterator[Service]:
    home = Path(tmp_path_factory.mktemp("fuzz")) / "home"
    url = ""
    if request.param == "postgresql":
        need(bool(PG_URL), "PostgreSQL: set FUNCX_FLOWS_TEST_POSTGRES_URL")
        engine = make_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        url = PG_URL
    app = create_app(ServiceSettings(home=home, database_url=url))
    with TestClient(app) as http:
        store = app.state.parts.store
        _, bob = store.create_token(store.ensure_user("bob"), "fuzz")
        alice = (home / "token").read_text().strip()
        yield Service(http, {"alice": alice, "bob": bob})


def _weird_text(max_size: int = 12) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=max_size),
        st.text(st.characters(categories=["Cs", "Cc", "Zl", "Co"]), min_size=1, max_size=4),
        st.sampled_from(["\ud800", "a\x00b", "\x7f", "x" * 600, "Ω", "", " ", "a\nb"]),
    )


def _spelled(ids: list[str], pick: int, how: int) -> str:
    """An id the service gave out, spelled some way, or not an id at all."""
    if not ids or how == 4:
        return str(uuid.uuid4())
    u = uuid.UUID(ids[pick % len(ids)])
    return [str(u), str(u).upper(), u.hex, "{" + str(u) + "}"][how % 4]


_numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=True, allow_infinity=True))
_json = st.recursive(
    st.none() | st.booleans() | _numbers | _weird_text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_weird_text(6), inner,
                                                                 max_size=3),
    max_leaves=12)


_POISON = st.sampled_from([{"k": "\ud800"}, {"\ud800": 1}, {"k": float("inf")},
                           {"k": float("nan")}, {"k": 2**70}, {"k": "a\x00b"},
                           {"k": ["x" * 70_000]}])


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


_who = st.sampled_from(["alice", "bob"])
_id = st.tuples(st.integers(0, 50), st.integers(0, 4))


def _op() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.one_of(
        st.tuples(st.just("function"), _who, _weird_text(), _weird_text(), st.booleans()),
        st.tuples(st.just("endpoint"), _who,
                  st.one_of(st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z"), _weird_text()),
                  st.one_of(st.just("valid"), st.just("valid"), st.text(min_size=40, max_size=40),
                            st.sampled_from(["~" * 40, "\x00" * 40])),
                  st.one_of(st.dictionaries(_weird_text(6), _json, max_size=4),
                            st.integers(0, 1200).map(_deep), _POISON)),
        st.tuples(st.just("submit"), _who, _id, _id, st.one_of(st.none(), _id),
                  st.one_of(st.none(), _weird_text()),
                  st.one_of(st.none(), st.fixed_dictionaries(
                      {"cores": st.integers(-2, 3), "walltime_s": _numbers}))),
        st.tuples(st.just("cancel"), _who, st.lists(_id, max_size=3)),
        st.tuples(st.just("share"), _who, st.sampled_from(["function", "endpoint"]), _id,
                  st.lists(st.one_of(_who, _weird_text()), max_size=2),
                  st.lists(st.one_of(_weird_text(), st.uuids().map(str)), max_size=2),
                  st.booleans()),
        st.tuples(st.just("delete"), _who, st.sampled_from(["functions", "endpoints"]), _id),
        st.tuples(st.just("token"), _who, _weird_text()),
    )


def _write(s: Service, op: tuple[Any, ...]) -> None:
    kind, who = op[0], op[1]
    if kind == "function":
        made = s.call(who, "POST", "/functions", {"name": op[2] or "f", "description": op[3],
                                                  "function": BODY, "memoize": op[4]})
        if made:
            s.functions.append(made["function_id"])
    elif kind == "endpoint":
        key = zmq.curve_keypair()[0].decode() if op[3] == "valid" else op[3]
        made = s.call(who, "POST", "/endpoints", {"name": op[2], "public_key": key,
                                                  "metadata": op[4]})
        if made:
            s.endpoints.append(made["endpoint_id"])
    elif kind == "submit":
        task: dict[str, Any] = {"function_id": _spelled(s.functions, *op[2]),
                                "endpoint_id": _spelled(s.endpoints, *op[3]),
                                "payload": PAYLOAD}
        if op[4] is not None:
            task["task_id"] = _spelled(s.tasks, *op[4])
        if op[5] is not None:
            task["group_id"] = op[5]
        if op[6] is not None:
            task["resources"] = op[6]
        made = s.call(who, "POST", "/tasks", {"tasks": [task]})
        if made:
            s.tasks.extend(made["task_ids"])
    elif kind == "cancel":
        s.call(who, "POST", "/tasks/cancel",
               {"task_ids": [_spelled(s.tasks, *i) for i in op[2]]})
    elif kind == "share":
        ids = s.functions if op[2] == "function" else s.endpoints
        s.call(who, "PUT", f"/{op[2]}s/{_spelled(ids, *op[3])}/sharing",
               {"users": op[4], "groups": op[5], "public": op[6]})
    elif kind == "delete":
        ids = s.functions if op[2] == "functions" else s.endpoints
        s.call(who, "DELETE", f"/{op[2]}/{_spelled(ids, *op[3])}")
    elif kind == "token":
        s.call(who, "POST", "/tokens", {"name": op[2]})


def _read_everything(s: Service, who: str) -> None:
    s.call(who, "GET", "/whoami")
    s.call(who, "GET", "/tokens")
    for kind in ("functions", "endpoints"):
        s.call(who, "GET", f"/{kind}")
        s.call(who, "GET", f"/{kind}?shared=true")
    for eid in s.endpoints:
        for tail in ("", "/status", "/sharing"):
            s.call(who, "GET", f"/endpoints/{eid}{tail}")
    for fid in s.functions:
        for tail in ("", "/sharing"):
            s.call(who, "GET", f"/functions/{fid}{tail}")
    for tid in s.tasks[-20:]:
        s.call(who, "GET", f"/tasks/{tid}")
        s.call(who, "GET", f"/tasks/{tid.upper()}")
    s.call(who, "POST", "/tasks/fetch", {"task_ids": s.tasks[-200:]})


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(_op(), min_size=1, max_size=6))
def test_no_sequence_of_writes_breaks_a_read(service: Service, ops):
    for op in ops:
        _write(service, op)
    for who in ("alice", "bob"):
        _read_everything(service, who)
