"""Keep long-running processes' heaps from growing: glibc tuning and trimming.

After a burst of tasks, glibc keeps the memory Python freed in its arenas: the
service and the endpoint agent measured ~40 MB more resident than their live
data after a million tasks (benchmarks/soak.py). ``malloc_trim`` returns it.

Trimming cannot undo fragmentation, though. glibc serves a block of 128 KiB or
more with its own mmap, until the first such block is freed: it then raises its
threshold to that size (up to 32 MB), and later large buffers (message batches,
result frames) come from the heap, where they leave holes that small objects pin.
A million-task soak showed the service's RSS creeping ~10 % while malloc's live
bytes stayed flat. ``steady_heap`` fixes the threshold, which turns that dynamic
raise off: large buffers are mapped and unmapped whole. Both are no-ops where the
C library has no such calls (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers in glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value
ARENA_MAX = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    fn = getattr(libc, "malloc_trim", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    result: Callable[[int], int] = fn
    return result


def release_free_memory() -> bool:
    """True when the C library gave memory back."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def steady_heap(threshold: int = MMAP_THRESHOLD, arenas: int = ARENA_MAX) -> bool:
    """Blocks of ``threshold`` bytes or more always mmapped, for the life of the
    process (glibc's dynamic threshold off), and at most ``arenas`` malloc arenas
    for all threads. Call before starting threads. True when the C library took it."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_ARENA_MAX, arenas))
