"""An MPI hello world on MPICH's C library through ctypes (no compiler, no mpi4py).

Each rank prints ``hello from rank R of N on HOST sum S`` where S is the sum of
all ranks, computed by MPI_Allreduce: it is right only when the ranks really
formed one MPI job. With ``--meet DIR --me A --other B``, rank 0 first writes
DIR/A and waits (up to 120 s) for DIR/B: two such jobs finish only if they ran
at the same time.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time
from pathlib import Path

# MPICH's handles (mpi.h): the ABI of libmpich.so.12
COMM_WORLD, MPI_INT, MPI_SUM = 0x44000000, 0x4C000405, 0x58000003


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--meet", type=Path)
    p.add_argument("--me", default="")
    p.add_argument("--other", default="")
    a = p.parse_args()
    mpi = ctypes.CDLL("libmpich.so.12", mode=ctypes.RTLD_GLOBAL)
    mpi.MPI_Init(None, None)
    rank, size, total = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    mpi.MPI_Comm_rank(COMM_WORLD, ctypes.byref(rank))
    mpi.MPI_Comm_size(COMM_WORLD, ctypes.byref(size))
    name, length = ctypes.create_string_buffer(256), ctypes.c_int()
    mpi.MPI_Get_processor_name(name, ctypes.byref(length))
    mpi.MPI_Allreduce(ctypes.byref(rank), ctypes.byref(total), 1, MPI_INT, MPI_SUM,
                      COMM_WORLD)
    if a.meet is not None and rank.value == 0:
        (a.meet / a.me).touch()
        deadline = time.monotonic() + 120
        while not (a.meet / a.other).exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"{a.me} never met {a.other}")
            time.sleep(0.05)
    mpi.MPI_Barrier(COMM_WORLD)
    line = f"hello from rank {rank.value} of {size.value} on {name.value.decode()} " \
        f"sum {total.value}\n"
    os.write(1, line.encode())  # one write: print's text and newline may go apart
    mpi.MPI_Finalize()


if __name__ == "__main__":
    main()
