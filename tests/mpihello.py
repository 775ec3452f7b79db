"""The MPI hello world the MPI tests run (mpi/hello.py), and how its output is read."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from funcx_flows.mpi import MPIFunction

HELLO = Path(__file__).parent / "mpi" / "hello.py"
# ``{0}``: the program's own options (--meet ...), or ""
hello = MPIFunction(f"{sys.executable} {HELLO} {{0}}", walltime=120)


def ranks_said(stdout: str, size: int) -> list[int]:
    """The ranks that said hello as one job of ``size`` (the sum of all ranks, from
    MPI_Allreduce, right). The launcher forwards each rank's output in chunks of
    its own: lines of two ranks may interleave, so they are found, not split."""
    total = size * (size - 1) // 2
    return sorted(int(rank) for rank, of, sum_ in re.findall(
        r"hello from rank (\d+) of (\d+) on \S+? sum (\d+?)(?=\D|$)", stdout)
        if int(of) == size and int(sum_) == total)


def two_at_once(executor: Any, folder: Path) -> None:
    """Two 2-rank hello worlds whose rank 0s wait for each other (``--meet``): they
    end well only if the executor's endpoint ran them side by side."""
    first = executor.submit(hello, f"--meet {folder} --me a --other b")
    second = executor.submit(hello, f"--meet {folder} --me b --other a")
    for future in (first, second):
        result = future.result(timeout=180)
        assert result.returncode == 0, result.stderr
        assert ranks_said(result.stdout, 2) == [0, 1], result
