"""Hand freed heap back to the operating system in long-running processes.

After a burst of tasks, glibc keeps the memory Python freed in its arenas: the
service and the endpoint agent measured ~40 MB more resident than their live
data after a million tasks (benchmarks/soak.py). ``malloc_trim`` returns it. A
no-op where the C library has no such call (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    result: Callable[[int], int] = fn
    return result


def release_free_memory() -> bool:
    """True when the C library gave memory back."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
