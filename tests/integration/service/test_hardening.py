"""Inputs that once broke reads or answered 500, revocation that held only after a
cache expired, and stream parameters past 64 bits. Real service process."""

from __future__ import annotations

import base64
import json
import threading
import uuid

import httpx
import pytest
import zmq
from waiting import wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from funcx_flows import serialize


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw(client: httpx.Client, method: str, path: str, body: object) -> httpx.Response:
    """A body as a client could send it: lone surrogates, NaN and Infinity included."""
    return client.request(method, path, content=json.dumps(body, allow_nan=True).encode(),
                          headers={"Content-Type": "application/json"})


def key() -> str:
    return zmq.curve_keypair()[0].decode()


def _deep(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("metadata, words", [
    ({"k": "\ud800"}, "surrogate"),
    ({"\udfff": 1}, "surrogate"),
    (_deep(900), "deeper"),
    ({"k": float("inf")}, "finite"),
    ({"k": float("nan")}, "finite"),
    ({"k": 2**70}, "64 bits"),
    ({"k": "a\x00b"}, "control"),
    ({"k": "x" * 70_000}, "bytes"),
])
def test_endpoint_metadata_that_could_not_be_served_is_a_422(api, metadata, words):
    r = raw(api.alice, "POST", "/endpoints", {"name": "ep-poison", "public_key": key(),
                                              "metadata": metadata})
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]["message"], r.json()
    # nothing was stored: every read of endpoints answers, for the owner and others
    for client in (api.alice, api.bob):
        assert client.get("/endpoints").status_code == 200
        assert client.get("/endpoints?shared=true").status_code == 200


def test_a_shared_endpoint_with_odd_but_valid_metadata_reads_for_everyone(api):
    meta = {"note": "tab\tand\nlines", "Ω": [1.5, -2, None, True], "n": {"m": {"k": "v"}}}
    r = raw(api.alice, "POST", "/endpoints", {"name": "ep-odd", "public_key": key(),
                                              "metadata": meta})
    assert r.status_code == 200, r.text
    eid = r.json()["endpoint_id"]
    assert api.alice.put(f"/endpoints/{eid}/sharing", json={"public": True}).status_code == 200
    for client in (api.alice, api.bob):
        assert client.get(f"/endpoints/{eid}").json()["metadata"] == meta
        assert client.get(f"/endpoints/{eid}/status").status_code == 200
        listed = client.get("/endpoints?shared=true").json()["endpoints"]
        assert meta in [e["metadata"] for e in listed]


@pytest.mark.parametrize("public_key", ["~" * 40, "\x00" * 40, "é" * 40, "a" * 39 + "\"",
                                        " " * 40])
def test_a_malformed_key_is_a_422_and_the_connection_stays(api, public_key):
    r = raw(api.alice, "POST", "/endpoints", {"name": "ep-key", "public_key": public_key})
    assert r.status_code == 422, r.text
    assert "Z85" in r.json()["error"]["message"]
    assert api.alice.get("/whoami").status_code == 200


@pytest.mark.parametrize("field, value", [("name", "a\x00b"), ("name", "\ud800"),
                                          ("name", "tab\there"),
                                          ("description", "nul\x00here")])
def test_function_text_with_nul_controls_or_surrogates_is_a_422(api, field, value):
    body = {"name": "f", "function": b64(serialize.pack_function(abs)), field: value}
    r = raw(api.alice, "POST", "/functions", body)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]


def test_text_is_stored_as_given_where_it_is_valid(api):
    body = {"name": "Ω-fit", "description": "line one\nline two\tend",
            "function": b64(serialize.pack_function(abs))}
    fid = raw(api.alice, "POST", "/functions", body).json()["function_id"]
    got = api.alice.get(f"/functions/{fid}").json()
    assert (got["name"], got["description"]) == (body["name"], body["description"])


def _endpoint_and_function(api) -> tuple[str, str]:
    eid = raw(api.alice, "POST", "/endpoints", {"name": "ep-tasks", "public_key": key()}
              ).json()["endpoint_id"]
    fid = api.alice.post("/functions", json={
        "name": "f", "function": b64(serialize.pack_function(abs))}).json()["function_id"]
    return eid, fid


@pytest.mark.parametrize("walltime", [float("inf"), float("-inf"), float("nan"), 1e999])
def test_walltime_must_be_a_finite_number(api, walltime):
    eid, fid = _endpoint_and_function(api)
    task = {"function_id": fid, "endpoint_id": eid, "payload": b64(b"x"),
            "resources": {"walltime_s": walltime}}
    r = raw(api.alice, "POST", "/tasks", {"tasks": [task]})
    assert r.status_code == 422, r.text
    assert "walltime_s" in r.json()["error"]["message"]


def test_any_spelling_of_a_uuid_is_the_same_task(api):
    eid, fid = _endpoint_and_function(api)
    tid = uuid.uuid4()
    payload = b64(serialize.pack_call((-1,), {}))
    spellings = [str(tid).upper(), tid.hex, "{" + str(tid) + "}", f"urn:uuid:{tid}", str(tid)]
    for spelled in spellings:
        r = api.alice.post("/tasks", json={"tasks": [{
            "task_id": spelled, "function_id": fid.upper(), "endpoint_id": eid.replace("-", ""),
            "payload": payload}]})
        assert r.status_code == 200, r.text
        assert r.json()["task_ids"] == [str(tid)]  # one task, in the canonical spelling
    for spelled in spellings[:3]:
        assert api.alice.get(f"/tasks/{spelled}").json()["task_id"] == str(tid)
    fetched = api.alice.post("/tasks/fetch", json={"task_ids": spellings[:3]}).json()
    assert [t["task_id"] for t in fetched["tasks"]] == [str(tid)] * 3
    assert api.alice.post(f"/tasks/{tid.hex}/cancel").json()["state"] == "cancelled"
    assert api.bob.get(f"/tasks/{str(tid).upper()}").status_code == 404


def test_a_task_id_that_is_not_a_uuid_is_a_422(api):
    eid, fid = _endpoint_and_function(api)
    r = api.alice.post("/tasks", json={"tasks": [{
        "task_id": "not-a-uuid", "function_id": fid, "endpoint_id": eid, "payload": b64(b"")}]})
    assert r.status_code == 422 and "UUID" in r.json()["error"]["message"], r.text


def _stream_url(api, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return api.url.replace("http", "ws", 1) + "/v1/results/stream?" + query


def _token(api) -> tuple[str, str]:
    r = api.alice.post("/tokens", json={"name": "stream"}).json()
    return r["token_id"], r["token"]


@pytest.mark.parametrize("after", [str(2**63), str(2**64 + 5), "-1", "abc", "1e3"])
def test_a_stream_position_past_64_bits_is_refused_with_a_reason(api, after):
    _, token = _token(api)
    with pytest.raises(InvalidStatus) as refused:
        connect(_stream_url(api, after=after),
                additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)
    assert refused.value.response.status_code == 422
    body = json.loads(refused.value.response.body)
    assert body["error"]["code"] == "invalid_request" and "after" in body["error"]["message"]
    # the largest valid one is served
    with connect(_stream_url(api, after=2**63 - 1),
                 additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10):
        pass


def test_a_stream_with_a_bad_token_is_refused_with_401(api):
    with pytest.raises(InvalidStatus) as refused:
        connect(_stream_url(api, after=0), additional_headers={"Authorization": "Bearer no"},
                open_timeout=10)
    assert refused.value.response.status_code == 401
    assert "revoked" in json.loads(refused.value.response.body)["error"]["message"]


def _open_stream(api, token: str) -> tuple[threading.Event, list[ConnectionClosed]]:
    ws = connect(_stream_url(api, after=0),
                 additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)
    ended = threading.Event()
    closes: list[ConnectionClosed] = []

    def read() -> None:
        try:
            while True:
                ws.recv()
        except ConnectionClosed as exc:
            closes.append(exc)
        finally:
            ended.set()
            ws.close()

    threading.Thread(target=read, daemon=True).start()
    return ended, closes


def test_a_revoke_through_the_api_holds_at_once_and_closes_its_streams(api):
    token_id, token = _token(api)
    ended, closes = _open_stream(api, token)
    with api.anonymous() as anon:
        headers = {"Authorization": f"Bearer {token}"}
        assert anon.get("/whoami", headers=headers).status_code == 200
        assert api.alice.delete(f"/tokens/{token_id}").status_code == 200
        assert anon.get("/whoami", headers=headers).status_code == 401
    assert ended.wait(10), "the stream of the revoked token stayed open"
    assert closes[0].rcvd.code == 1008 and "revoked" in closes[0].rcvd.reason


def test_a_revoke_by_the_cli_holds_at_once_and_closes_its_streams(api, cli):
    token_id, token = _token(api)
    ended, closes = _open_stream(api, token)
    with api.anonymous() as anon:
        headers = {"Authorization": f"Bearer {token}"}
        assert anon.get("/whoami", headers=headers).status_code == 200
        out = cli("token", "revoke", token_id)
        assert out.returncode == 0, out.stderr
        # the very next request: no cache lets it through
        assert anon.get("/whoami", headers=headers).status_code == 401
    wait_until(ended.is_set, 10, "the stream of the revoked token to close")
    assert closes[0].rcvd.code == 1008 and "revoked" in closes[0].rcvd.reason
