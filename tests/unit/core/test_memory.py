"""release_free_memory hands freed heap back: measured on a real process's RSS."""

from __future__ import annotations

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
import ctypes, sys
from funcx_flows.memory import steady_heap
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]
libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print("none")
    raise SystemExit
libc.mallinfo2.restype = Info
if sys.argv[1] == "steady":
    assert steady_heap()
first = bytearray(1 << 20)  # glibc maps it; freeing it raises the dynamic threshold
del first
held = [bytearray(1 << 20) for _ in range(20)]
print(libc.mallinfo2().hblks)
"""


@pytest.mark.parametrize("mode", ["default", "steady"])
def test_steady_heap_keeps_large_buffers_out_of_the_heap(mode):
    out = subprocess.run([sys.executable, "-c", STEADY, mode], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    if out == ["none"]:
        pytest.skip("this C library has no mallinfo2 (not glibc >= 2.33)")
    mapped = int(out[0])
    if mode == "default":  # what steady_heap is for: glibc put them in its heap
        assert mapped < 20, mapped
    else:  # each 1 MB buffer its own mapping, unmapped whole when freed
        assert mapped >= 20, mapped
