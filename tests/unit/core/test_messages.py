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


def test_error_info_of_a_plain_exception_names_its_type():
    info = m.error_info(ValueError("bad"))
    assert info.code == "error" and info.message == "ValueError: bad"
