"""User payloads: cloudpickle inside a small versioned envelope.

Functions, arguments and results travel as opaque bytes. The service stores and
forwards them and never unpickles them; only a worker (and the client, for
results) does. The envelope is a fixed 8-byte header so that a worker can refuse a
payload before unpickling anything::

    b"FXF" | envelope version | serializer id | python major | minor | flags | data
    (3 bytes, then one byte each, then the pickle)

A function pickled by Python 3.11 cannot be loaded by 3.12 (code objects differ),
so a minor-version mismatch on a function is reported as ``PythonVersionMismatch``
instead of a confusing unpickling failure in the worker.

The arguments of a call are ``(args, kwargs)`` in an envelope of version 1. A
call that carries a context for the worker (what a Prefect task run tells its
remote body: ``prefect.runtime`` values, the log level) is ``(args, kwargs,
context)`` in an envelope of version 2, so that an older worker refuses it by
its version instead of misreading it.

Code that travels by value keeps the name of the file it was written in, so that
a remote traceback names the user's own file and line.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import site
import sys
import sysconfig
import threading
from collections import ChainMap
from types import CodeType, ModuleType
from typing import Any

import cloudpickle

from funcx_flows.errors import PythonVersionMismatch, SerializationError

MAGIC = b"FXF"
ENVELOPE_VERSION = 1
CALL_CONTEXT_VERSION = 2  # (args, kwargs, context): see the module's docstring
_VERSIONS = (ENVELOPE_VERSION, CALL_CONTEXT_VERSION)
HEADER_SIZE = 8
SERIALIZER_CLOUDPICKLE = 1
_SERIALIZER_NAMES = {SERIALIZER_CLOUDPICKLE: "cloudpickle"}
PY_VERSION = (sys.version_info.major, sys.version_info.minor)


def _header(version: int = ENVELOPE_VERSION, serializer: int = SERIALIZER_CLOUDPICKLE) -> bytes:
    return MAGIC + bytes((version, serializer, PY_VERSION[0], PY_VERSION[1], 0))


_HEADER = _header()
_CONTEXT_HEADER = _header(CALL_CONTEXT_VERSION)


def pack(obj: Any) -> bytes:
    """Serialize any Python object (a function, a tuple of args, a result)."""
    return _pack(obj, _HEADER)


def _code_with_its_file(code: CodeType) -> tuple[Any, tuple[Any, ...]]:
    """cloudpickle's reduction of a code object, keeping the file it came from:
    cloudpickle writes ``<dynamic-code>`` there (for payloads that do not depend on
    the path), which left a remote traceback without file names. Loaded by the
    standard ``CodeType`` constructor, so any worker reads it."""
    ctor, args = cloudpickle.cloudpickle._code_reduce(code)
    return ctor, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = ChainMap({CodeType: _code_with_its_file},
                              cloudpickle.Pickler.dispatch_table)


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _pack(obj: Any, header: bytes) -> bytes:
    try:
        data: bytes = _dumps(obj)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {type(obj).__name__}: {type(exc).__name__}: {exc}"
        ) from exc
    return header + data


def _installed(module: ModuleType) -> bool:
    """Whether a module comes with Python or an installed distribution (so the
    remote side can import it) rather than from the user's own scripts."""
    path = getattr(module, "__file__", None)
    if not path:
        return module.__name__ in sys.builtin_module_names
    path = os.path.realpath(path)
    return any(path.startswith(p) for p in _INSTALLED_PREFIXES)


_INSTALLED_PREFIXES = tuple(
    os.path.realpath(p) + os.sep
    for p in {*(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
              *site.getsitepackages(), site.getusersitepackages()}
    if p
)


def pack_function(fn: Any) -> bytes:
    """Serialize a function; code from the user's own modules (scripts, test
    files, notebooks) travels by value, since the worker cannot import it."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or _installed(module):
        return pack(fn)
    with _BY_VALUE_LOCK:
        cloudpickle.register_pickle_by_value(module)
        try:
            return pack(fn)
        finally:
            cloudpickle.unregister_pickle_by_value(module)


_BY_VALUE_LOCK = threading.Lock()


def pack_call(args: tuple[Any, ...], kwargs: dict[str, Any],
              context: dict[str, Any] | None = None) -> bytes:
    """Serialize the arguments of one call, with a context for the worker if any."""
    if context is None:
        return pack((args, kwargs))
    return _pack((args, kwargs, context), _CONTEXT_HEADER)


def unpack_call(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any] | None]:
    """``(args, kwargs, context or None)`` of a call packed by ``pack_call``."""
    call = unpack(data, what="arguments", strict_python=True)
    context = None
    try:
        if data[3] == CALL_CONTEXT_VERSION:
            args, kwargs, context = call
        else:
            args, kwargs = call
    except (TypeError, ValueError):
        args = kwargs = None
    if not (type(args) is tuple and type(kwargs) is dict
            and (context is None or type(context) is dict)):
        raise SerializationError("the arguments are not a call packed by "
                                 "funcx_flows.serialize.pack_call")
    return args, kwargs, context


def envelope_info(data: bytes) -> tuple[int, str, tuple[int, int]]:
    """Read (envelope version, serializer name, python version) without unpickling."""
    if len(data) < HEADER_SIZE or data[:3] != MAGIC:
        raise SerializationError(
            "payload is not a funcx-flows envelope (bad magic bytes); "
            "serialize it with funcx_flows.serialize.pack"
        )
    version, serializer, major, minor = data[3], data[4], data[5], data[6]
    if version not in _VERSIONS:
        raise SerializationError(
            f"unsupported envelope version {version} (this side reads versions "
            f"{', '.join(map(str, _VERSIONS))}): upgrade funcx-flows here")
    name = _SERIALIZER_NAMES.get(serializer)
    if name is None:
        raise SerializationError(f"unknown serializer id {serializer}")
    return version, name, (major, minor)


def unpack(data: bytes, *, what: str = "payload", strict_python: bool = False) -> Any:
    """Deserialize an envelope.

    ``strict_python`` refuses a payload made by another Python minor version up
    front (used for functions); otherwise a failure to unpickle mentions the
    version difference when there is one.
    """
    _, _, py = envelope_info(data)
    if strict_python and py != PY_VERSION:
        raise PythonVersionMismatch(
            f"{what} was serialized by Python {py[0]}.{py[1]} but this worker runs "
            f"Python {PY_VERSION[0]}.{PY_VERSION[1]}; run the endpoint with the same "
            "Python minor version as the client",
            client_python=f"{py[0]}.{py[1]}",
            worker_python=f"{PY_VERSION[0]}.{PY_VERSION[1]}",
        )
    try:
        return pickle.loads(memoryview(data)[HEADER_SIZE:])
    except Exception as exc:
        hint = ""
        if py != PY_VERSION:
            hint = (
                f" (it was serialized by Python {py[0]}.{py[1]}, "
                f"this process runs {PY_VERSION[0]}.{PY_VERSION[1]})"
            )
        raise SerializationError(
            f"cannot deserialize {what}: {type(exc).__name__}: {exc}{hint}"
        ) from exc


def content_hash(data: bytes) -> str:
    """Stable identity of a serialized function, used for auto-registration."""
    return hashlib.sha256(data).hexdigest()
