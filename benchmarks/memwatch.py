"""Peak PSS of a process tree (a benchmark and everything it started), sampled
from a separate process so that the sampling takes no GIL from the measured one.

    with PeakPss(os.getpid()) as watch:
        ...
    watch.peak_mib  # the largest sum of PSS over the tree seen, MiB (as the peers report)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from types import TracebackType

import psutil


class PeakPss:
    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_mib = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PeakPss:
        self._proc = subprocess.Popen([sys.executable, __file__, str(self.pid),
                                       str(self.interval_s)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline().strip() == b"ready"
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        out, _ = proc.communicate(timeout=60)  # closes its stdin: the cue to answer and end
        self.peak_mib = float(json.loads(out.decode().strip().splitlines()[-1])["peak_mib"])


def _tree_pss(root: psutil.Process, me: int) -> int:
    total = 0
    for p in [root, *root.children(recursive=True)]:
        if p.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def _watch(pid: int, interval_s: float) -> None:
    root, me, peak = psutil.Process(pid), os.getpid(), 0
    print("ready", flush=True)
    while True:
        peak = max(peak, _tree_pss(root, me))
        ready, _, _ = select.select([sys.stdin], [], [], interval_s)
        if ready and not sys.stdin.buffer.read1(1):
            break
    print(json.dumps({"peak_mib": round(peak / 2**20, 1)}), flush=True)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), float(sys.argv[2]))
