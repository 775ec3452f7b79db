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
