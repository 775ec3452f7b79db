"""release_free_memory hands freed heap back: measured on a real process's RSS."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import psutil
from funcx_flows.memory import release_free_memory, _malloc_trim
if _malloc_trim() is None:
    print("none")
    raise SystemExit
me = psutil.Process()
# ~100 MB in blocks malloc serves from its heap (over pymalloc's 512-byte limit)
junk = [bytes(2000) + i.to_bytes(4, "little") for i in range(50_000)]
keep = junk[::1000] + junk[-1:]  # survivors scattered through it, and at its top
del junk
before = me.memory_info().rss
release_free_memory()
after = me.memory_info().rss
print(before, after, len(keep))
"""


def test_freed_heap_goes_back_to_the_os():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    if out == ["none"]:
        pytest.skip("this C library has no malloc_trim (not glibc)")
    before, after = int(out[0]), int(out[1])
    assert before - after > 30_000_000, (before, after)


STEADY = """
import ctypes, sys, threading
from funcx_flows.memory import steady_heap
if sys.argv[1] == "steady":
    assert steady_heap()
barrier = threading.Barrier(6)
def work():
    junk = [bytearray(1000) for _ in range(2000)]  # from this thread's arena
    barrier.wait()  # all six allocate at once: glibc gives each a free arena
    del junk
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.parametrize("mode", ["default", "steady"])
def test_steady_heap_caps_the_arenas(mode):
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc arenas are glibc's")
    err = subprocess.run([sys.executable, "-c", STEADY, mode], capture_output=True, text=True,
                         timeout=120, check=True).stderr
    arenas = err.count("Arena ")
    if mode == "default":  # what steady_heap is for: an arena per allocating thread
        assert arenas >= 4, err
    else:
        assert 1 <= arenas <= 2, err
