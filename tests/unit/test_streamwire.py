"""The client's result-stream frames: typed, versioned, and strict on decode."""

from __future__ import annotations

import json

import msgspec
import pytest

from funcx_flows import streamwire as sw
from funcx_flows.errors import ProtocolError


@pytest.mark.parametrize("encoding", sw.ENCODINGS)
def test_every_frame_round_trips(encoding: str) -> None:
    frames: list[sw.Frame] = [
        sw.Results(results=[{"task_id": "t1", "seq": 3, "state": "success"}]),
        sw.Submitted(ref=4, task_ids=["a", "b"]),
        sw.Error(ref=5, error=sw.ErrorBody(code="invalid_request", message="no",
                                           details={"field": "tasks"})),
    ]
    client, service = sw.client_codec(encoding), sw.service_codec(encoding)
    for frame in frames:
        assert client.decode(service.encode(frame)) == frame
    submit = sw.Submit(ref=1, tasks=[{"function_id": "f", "endpoint_id": "e"}])
    assert service.decode(client.encode(submit)) == submit


def test_a_frame_from_an_older_peer_without_a_version_is_version_1() -> None:
    old = json.dumps({"op": "submit", "ref": 2, "tasks": []}).encode()
    frame = sw.service_codec("json").decode(old)
    assert isinstance(frame, sw.Submit) and frame.v == 1 and frame.ref == 2


def test_unknown_fields_are_ignored() -> None:
    newer = json.dumps({"op": "submitted", "ref": 1, "task_ids": ["x"], "later": 1}).encode()
    assert sw.client_codec("json").decode(newer) == sw.Submitted(ref=1, task_ids=["x"])


@pytest.mark.parametrize("data, words", [
    (b"not json", "not json"),
    (json.dumps({"op": "results", "results": []}).encode(), "json frame this side reads"),
    (json.dumps({"op": "submit", "tasks": "x"}).encode(), "$.tasks"),
    (json.dumps({"op": "submit", "v": 2, "tasks": []}).encode(), "unsupported stream version 2"),
])
def test_a_bad_frame_is_a_protocol_error_that_says_why(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        sw.service_codec("json").decode(data)
    assert words in caught.value.message


def test_msgpack_frames_carry_bytes_as_bytes() -> None:
    codec = sw.service_codec("msgpack")
    data = codec.encode(sw.Results(results=[{"data": b"\x00\x01"}]))
    assert msgspec.msgpack.decode(data)["results"][0]["data"] == b"\x00\x01"


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stream encoding"):
        sw.client_codec("xml")
