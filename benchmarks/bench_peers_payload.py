"""The payload workload (``payload.py``) on the peers, with the harness's set-ups.

    python benchmarks/bench_peers_payload.py --system ppe|parsl|dask --reps 3

ppe: ``ProcessPoolExecutor(2)``; parsl: HTEX, LocalProvider, 1 block, 2 workers,
CurveZMQ on, driven by ``htex.submit`` as the funcX endpoint does (no DFK); dask:
``LocalCluster(2 worker processes x 1 thread)``. Prints ONE JSON line, with the
metric names bench_funcx.py uses, so ``run.py`` can set them side by side. Needs
only the standard library and the peer under test (it runs under --peer-python).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import payload

Submit = tuple[Callable[[bytes], Any], Callable[[bytes, int], Any], Callable[[Any], list[Any]]]


@contextlib.contextmanager
def ppe(workers: int) -> Iterator[Submit]:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as ex:
        yield (lambda d: ex.submit(payload.echo, d).result(),
               lambda d, n: [ex.submit(payload.echo, d) for _ in range(n)],
               lambda fs: [f.result() for f in fs])


@contextlib.contextmanager
def parsl(workers: int) -> Iterator[Submit]:
    import parsl as p
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    # LocalProvider starts process_worker_pool.py through a shell: it must be on PATH.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    with tempfile.TemporaryDirectory(prefix="parsl-payload-") as run_dir:
        htex = HighThroughputExecutor(
            label="htex", max_workers_per_node=workers, cores_per_worker=1, encrypted=True,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
        dfk = p.load(Config(executors=[htex], run_dir=run_dir, strategy="none"))
        try:
            yield (lambda d: htex.submit(payload.echo, {}, d).result(),
                   lambda d, n: [htex.submit(payload.echo, {}, d) for _ in range(n)],
                   lambda fs: [f.result() for f in fs])
        finally:
            dfk.cleanup()
            p.clear()


@contextlib.contextmanager
def dask(workers: int) -> Iterator[Submit]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(workers)
        yield (lambda d: client.submit(payload.echo, d, pure=False).result(),
               lambda d, n: [client.submit(payload.echo, d, pure=False) for _ in range(n)],
               client.gather)


SYSTEMS = {"ppe": ppe, "parsl": parsl, "dask": dask}
NAMES = {"ppe": "ppe", "parsl": "parsl-htex-direct", "dask": "dask-localcluster"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pay-scale", type=float, default=1.0,
                    help="multiplies the payload workload's call counts")
    args = ap.parse_args()
    # Parsl's and dask's workers import echo by reference, from payload.py.
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p)

    t0 = time.perf_counter()
    with SYSTEMS[args.system](args.workers) as (submit_one, submit_many, wait_many):
        startup = time.perf_counter() - t0
        reps = []
        for rep in range(args.reps):
            r = payload.measure(submit_one, submit_many, wait_many, scale=args.pay_scale)
            print(f"rep {rep}: {json.dumps({k: round(v, 2) for k, v in r.items()})}",
                  file=sys.stderr, flush=True)
            reps.append(r)
    metrics = {k: {"median": statistics.median(r[k] for r in reps), "all": [r[k] for r in reps]}
               for k in reps[0]}
    print(json.dumps({"system": NAMES[args.system], "metrics": metrics, "startup_s": startup}),
          flush=True)


if __name__ == "__main__":
    main()
