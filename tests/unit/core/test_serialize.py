import sys

import pytest

from funcx_flows import serialize
from funcx_flows.errors import PythonVersionMismatch, SerializationError


def test_round_trip_of_function_and_call():
    def add(a, b=1):
        return a + b

    fn = serialize.unpack(serialize.pack(add), strict_python=True)
    args, kwargs = serialize.unpack(serialize.pack_call((2,), {"b": 3}))
    assert fn(*args, **kwargs) == 5


def test_header_records_python_version_and_serializer():
    data = serialize.pack(42)
    version, name, py = serialize.envelope_info(data)
    assert (version, name, py) == (1, "cloudpickle", sys.version_info[:2])


def test_not_an_envelope_is_refused_before_unpickling():
    with pytest.raises(SerializationError, match="not a funcx-flows envelope"):
        serialize.unpack(b"\x80\x04K*.")


def test_other_python_minor_is_refused_for_functions():
    data = bytearray(serialize.pack(len))
    data[6] = (data[6] + 1) % 256
    with pytest.raises(PythonVersionMismatch) as info:
        serialize.unpack(bytes(data), what="function", strict_python=True)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in str(info.value)
    assert info.value.code == "python_version_mismatch"


def test_corrupt_body_names_the_cause():
    data = serialize.pack({"a": 1})[:-3]
    with pytest.raises(SerializationError, match="cannot deserialize payload"):
        serialize.unpack(data)


def test_unpicklable_object_names_its_type():
    import threading

    with pytest.raises(SerializationError, match="cannot serialize lock"):
        serialize.pack(threading.Lock())


def test_content_hash_is_stable_and_content_based():
    def f():
        return 1

    assert serialize.content_hash(serialize.pack(f)) == serialize.content_hash(serialize.pack(f))
    assert serialize.content_hash(serialize.pack(1)) != serialize.content_hash(serialize.pack(2))


def test_a_call_with_a_context_has_its_own_envelope_version():
    plain = serialize.pack_call((1,), {"b": 2})
    with_context = serialize.pack_call((1,), {"b": 2}, {"log_level": 10})
    assert serialize.envelope_info(plain)[0] == serialize.ENVELOPE_VERSION
    assert serialize.envelope_info(with_context)[0] == serialize.CALL_CONTEXT_VERSION
    assert serialize.unpack_call(plain) == ((1,), {"b": 2}, None)
    assert serialize.unpack_call(with_context) == ((1,), {"b": 2}, {"log_level": 10})


def test_a_payload_that_is_not_a_call_is_refused_by_name():
    with pytest.raises(SerializationError, match="not a call packed by"):
        serialize.unpack_call(serialize.pack([1, 2]))


def test_an_unknown_envelope_version_says_to_upgrade():
    data = bytearray(serialize.pack_call((), {}))
    data[3] = 9
    with pytest.raises(SerializationError, match=r"unsupported envelope version 9.*upgrade"):
        serialize.unpack_call(bytes(data))


def _raises_bad_value(x):
    raise ValueError(f"bad value {x}")


def test_a_remote_exception_names_its_type_once_and_the_users_file():
    """Through a real worker's Runner: the remote traceback names this file (code sent
    by value keeps its co_filename), and the error says the type once."""
    from funcx_flows import messages as m
    from funcx_flows.endpoint.worker import Runner
    from funcx_flows.errors import RemoteExecutionError
    from funcx_flows.sdk.client import result_from_record

    spec = m.TaskSpec(task_id="t", function_id="f",
                      function=serialize.pack_function(_raises_bad_value),
                      payload=serialize.pack_call((1,), {}))
    err = Runner(1 << 20).run(spec).error
    assert err is not None
    record = {"task_id": "t", "state": "failed", "error": {
        "code": err.code, "message": err.message, "remote_type": err.remote_type,
        "remote_traceback": err.remote_traceback, "exception": err.exception}}
    with pytest.raises(RemoteExecutionError) as raised:
        result_from_record(record, original_exceptions=False)
    text = str(raised.value)
    assert text.startswith("ValueError: bad value 1\n") and "builtins" not in text
    line = _raises_bad_value.__code__.co_firstlineno + 1
    assert f'File "{__file__}", line {line}, in _raises_bad_value' in text
    assert "<dynamic-code>" not in text
    with pytest.raises(ValueError, match="bad value 1") as original:  # the default
        result_from_record(record)
    assert f'File "{__file__}"' in str(original.value.__cause__)
