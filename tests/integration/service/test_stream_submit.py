"""Submitting over the result stream's WebSocket: durable before the answer, the
same errors as REST, and a clean fallback (None) whenever the stream cannot."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from test_api import register_endpoint, register_function, task
from waiting import wait_until
from websockets.sync.client import connect

from funcx_flows.errors import AuthenticationError, InvalidRequest, NotFound
from funcx_flows.sdk import stream as stream_module
from funcx_flows.sdk.stream import ResultStream


def open_stream(api, token: str) -> ResultStream:
    s = ResultStream(api.url.replace("http", "ws", 1), token, lambda records: None)
    s.start()
    assert s.wait_connected(30)
    return s


def token_of(client) -> str:
    return client.headers["Authorization"].split()[1]


def test_tasks_submitted_on_the_stream_are_durable_and_errors_match_rest(api):
    fid, eid = register_function(api.alice), register_endpoint(api.alice, "ws-ep")
    s = open_stream(api, token_of(api.alice))
    try:
        ids = s.try_submit([task(fid, eid), task(fid, eid, task_id=str(uuid.uuid4()))])
        assert ids is not None and len(ids) == 2
        for t in ids:  # stored before the answer came
            assert api.alice.get(f"/tasks/{t}").json()["state"] == "waiting_for_endpoint"
        with pytest.raises(NotFound, match="no function"):
            s.try_submit([task(str(uuid.uuid4()), eid)])
        with pytest.raises(InvalidRequest, match="payload"):
            s.try_submit([{**task(fid, eid), "payload": "%%% not base64"}])
        with pytest.raises(InvalidRequest, match="function_id"):
            s.try_submit([{"endpoint_id": eid, "payload": ""}])
        # the refusals did not end the connection
        again = s.try_submit([task(fid, eid)])
        assert again is not None and len(again) == 1
        # another user cannot use alice's function
        b = open_stream(api, token_of(api.bob))
        try:
            with pytest.raises(NotFound):
                b.try_submit([task(fid, eid)])
        finally:
            b.close()
    finally:
        s.close()


def test_a_revoked_token_stops_submitting_on_an_open_stream(api, cli):
    """Revoked by the CLI (another process): each submit op checks the token, and the
    service closes the stream; either way nothing more is accepted, and the client's
    stream ends with an AuthenticationError when it tries to reconnect."""
    made = api.alice.post("/tokens", json={"name": "short-lived"}).json()
    errors: list[Exception] = []
    s = ResultStream(api.url.replace("http", "ws", 1), made["token"], lambda records: None,
                     on_error=errors.append)
    s.start()
    assert s.wait_connected(30)
    try:
        fid, eid = register_function(api.alice), register_endpoint(api.alice, "ws-revoke")
        assert s.try_submit([task(fid, eid)]) is not None
        assert cli("token", "revoke", made["token_id"]).returncode == 0
        with contextlib.suppress(AuthenticationError):  # the op came first
            assert s.try_submit([task(fid, eid)]) is None  # the stream closed first
        wait_until(lambda: errors, 10, "the stream to report the revoked token")
        assert isinstance(errors[0], AuthenticationError)
    finally:
        s.close()


def test_the_stream_declines_when_it_cannot_carry_a_batch(api, monkeypatch):
    fid, eid = register_function(api.alice), register_endpoint(api.alice, "ws-big")
    idle = ResultStream(api.url.replace("http", "ws", 1), token_of(api.alice), lambda r: None)
    assert idle.try_submit([task(fid, eid)]) is None  # never connected: use REST
    s = open_stream(api, token_of(api.alice))
    try:
        monkeypatch.setattr(stream_module, "SUBMIT_MAX_BYTES", 100)
        assert s.try_submit([task(fid, eid)]) is None  # too large for a frame: use REST
    finally:
        s.close()
    assert s.try_submit([task(fid, eid)]) is None  # closed: use REST


def test_garbage_on_the_stream_gets_an_error_frame_not_a_hangup(api):
    url = api.url.replace("http", "ws", 1) + "/v1/results/stream"
    with connect(url, additional_headers={"Authorization": api.alice.headers["Authorization"]},
                 compression=None) as ws:
        for frame, words in [("not json", "not json"), (json.dumps([1, 2]), "submit"),
                             (json.dumps({"op": "drop-tables"}), "submit"),
                             (json.dumps({"op": "submit", "ref": 7, "tasks": "x"}), "tasks")]:
            ws.send(frame)
            answer = json.loads(ws.recv(timeout=10))
            assert answer["op"] == "error", answer
            assert answer["error"]["code"] == "invalid_request"
            assert words in answer["error"]["message"].lower(), answer
        fid, eid = register_function(api.alice), register_endpoint(api.alice, "ws-raw")
        ws.send(json.dumps({"op": "submit", "ref": 8, "tasks": [task(fid, eid)]}))
        answer = json.loads(ws.recv(timeout=10))
        assert answer["op"] == "submitted" and answer["ref"] == 8
        assert len(answer["task_ids"]) == 1


def test_a_binary_stream_carries_payloads_as_bytes_and_refuses_garbage(api):
    """``encoding=msgpack``: the submit op takes raw payload bytes, answers come back
    in msgpack; a frame that is not msgpack gets an error frame; an unknown encoding
    is refused at the handshake."""
    import msgspec
    from websockets.exceptions import InvalidStatus

    from funcx_flows.sdk.client import b64decode

    fid, eid = register_function(api.alice), register_endpoint(api.alice, "ws-bin")
    s = ResultStream(api.url.replace("http", "ws", 1), token_of(api.alice), lambda r: None,
                     binary=True)
    s.start()
    assert s.wait_connected(30)
    try:
        payload = b64decode(task(fid, eid)["payload"]) + b"\x00\xff" * 10
        ids = s.try_submit([{**task(fid, eid), "payload": payload}])
        assert ids is not None
        with pytest.raises(InvalidRequest, match="function_id"):
            s.try_submit([{"endpoint_id": eid, "payload": b""}])
    finally:
        s.close()
    stored = api.alice.get(f"/tasks/{ids[0]}").json()
    assert stored["state"] == "waiting_for_endpoint"

    url = api.url.replace("http", "ws", 1) + "/v1/results/stream"
    headers = {"Authorization": api.alice.headers["Authorization"]}
    with connect(url + "?encoding=msgpack", additional_headers=headers,
                 compression=None) as ws:
        ws.send(b"{not msgpack at all")
        answer = msgspec.msgpack.decode(ws.recv(timeout=10))
        assert answer["op"] == "error" and "msgpack" in answer["error"]["message"]
    with pytest.raises(InvalidStatus):
        connect(url + "?encoding=xml", additional_headers=headers, compression=None)


def test_cancel_on_close_needs_a_group_and_a_sane_grace(api):
    from websockets.exceptions import InvalidStatus

    url = api.url.replace("http", "ws", 1) + "/v1/results/stream"
    headers = {"Authorization": api.alice.headers["Authorization"]}
    for query, why in (("cancel_on_close=5", "needs a group_id"),
                       ("group_id=g&cancel_on_close=-1", "between 0 and"),
                       ("group_id=g&cancel_on_close=1e9", "between 0 and"),
                       ("group_id=g&cancel_on_close=nan", "between 0 and"),
                       ("group_id=g&cancel_on_close=soon", "not a number of seconds")):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{url}?{query}", additional_headers=headers, compression=None)
        assert refused.value.response.status_code == 422, query
        error = json.loads(refused.value.response.body)["error"]
        assert "cancel_on_close" in error["message"] and why in error["message"], error
    with connect(f"{url}?group_id=g&cancel_on_close=5", additional_headers=headers,
                 compression=None) as ws:
        ws.ping().wait(10)
