import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcx_flows import messages as m
from funcx_flows.errors import ProtocolError


def test_round_trip_keeps_types_and_bytes_opaque():
    spec = m.TaskSpec(task_id="t1", function_id="f1", function=b"\x00fn", payload=b"\xffargs",
                      resources=m.ResourceSpec(cores=2))
    frame = m.encode(m.Tasks(tasks=[spec]))
    msg = m.Decoder(m.SERVICE_TO_AGENT).decode(frame)
    assert isinstance(msg, m.Tasks)
    assert msg.tasks[0] == spec


def test_a_message_of_the_wrong_direction_is_a_protocol_error():
    frame = m.encode(m.Hello(endpoint_id="e", agent_version="1", python_version="3.11",
                             hostname="h"))
    with pytest.raises(ProtocolError, match="malformed message"):
        m.Decoder(m.SERVICE_TO_AGENT).decode(frame)


def test_unknown_protocol_version_is_refused():
    frame = msgspec.msgpack.encode({"op": "heartbeat", "v": 99, "sent_at": 1.0})
    with pytest.raises(ProtocolError, match="unsupported protocol version 99"):
        m.Decoder(m.AGENT_TO_SERVICE).decode(frame)


def test_wrong_field_type_is_refused():
    frame = msgspec.msgpack.encode({"op": "results_ack", "task_ids": [1, 2]})
    with pytest.raises(ProtocolError):
        m.Decoder(m.SERVICE_TO_AGENT).decode(frame)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_protocol_error(data):
    for union in (m.SERVICE_TO_AGENT, m.AGENT_TO_SERVICE, m.MANAGER_TO_INTERCHANGE,
                  m.INTERCHANGE_TO_MANAGER, m.AGENT_TO_INTERCHANGE, m.INTERCHANGE_TO_AGENT):
        with contextlib.suppress(ProtocolError):
            m.Decoder(union).decode(data)


def test_a_string_that_is_not_utf8_is_a_protocol_error():
    # found by fuzzing the manager: a flipped bit inside a task id
    frame = m.encode(m.Cancel(task_ids=["abcdef"]))
    i = frame.index(b"abcdef")
    bad = frame[:i] + b"\xa5" + frame[i + 1:]
    with pytest.raises(ProtocolError, match="malformed"):
        m.Decoder(m.INTERCHANGE_TO_MANAGER).decode(bad)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([
    m.Cancel(task_ids=["t-1", "t-2"]), m.Heartbeat(sent_at=1.5), m.Ready(free=3),
    m.ManagerRegister(manager_id="m", hostname="h", workers=2, cores=2, python_version="3.11"),
    m.Results(results=[m.TaskResult(task_id="t", ok=True, data=b"x", stdout="out")]),
]), st.integers(0, 10_000), st.integers(0, 7))
def test_valid_frames_with_a_flipped_bit_are_protocol_errors_or_messages(msg, where, bit):
    frame = bytearray(m.encode(msg))
    frame[where % len(frame)] ^= 1 << bit
    for union in (m.MANAGER_TO_INTERCHANGE, m.INTERCHANGE_TO_MANAGER, m.SERVICE_TO_AGENT):
        with contextlib.suppress(ProtocolError):
            assert isinstance(m.Decoder(union).decode(bytes(frame)), m.Message)


def test_error_info_of_a_plain_exception_names_its_type():
    info = m.error_info(ValueError("bad"))
    assert info.code == "error" and info.message == "ValueError: bad"


class _OldErrorInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    remote_type: str = ""
    remote_traceback: str = ""


class _OldTaskResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """TaskResult as a peer from before the pickled exception and the log records."""

    task_id: str
    ok: bool
    data: bytes = b""
    error: _OldErrorInfo | None = None
    stdout: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    attempts: int = 1


def test_results_with_logs_and_exception_stay_readable_both_ways():
    new = m.TaskResult(task_id="t", ok=False, stdout="hi\n", logs=[
        m.LogRecord(created=1.0, level=30, name="lib", message="careful", at=3)],
        error=m.ErrorInfo(code="remote_exception", message="ValueError: x", exception=b"FXF.."))
    old = msgspec.msgpack.decode(msgspec.msgpack.encode(new), type=_OldTaskResult)
    assert (old.task_id, old.stdout, old.error.message) == ("t", "hi\n", "ValueError: x")
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=m.TaskResult)
    assert back.logs == [] and back.error is not None and back.error.exception == b""
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(new), type=m.TaskResult) == new
