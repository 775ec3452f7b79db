"""funcx-flows through the full path, on the peers' workloads.

client -> REST -> service (durable, SQLite WAL) -> ZMQ/Curve -> agent -> interchange
-> manager -> worker -> back, results on the WebSocket stream. Prints ONE JSON line
with the same metric names as ../shared/bench/peers, so ``benchmarks/run.py`` can
set it beside them in one invocation.

    python benchmarks/bench_funcx.py --reps 3 [--only lat,tp,sleep,pay]

``pay`` is the payload workload of ``payload.py`` (1 MB and 10 MB echoed); for it
the service's payload and result limits are raised (see ``PAYLOAD_LIMIT``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import payload
import psutil
from memwatch import PeakPss

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor

# The service's default limits (max_payload_bytes, max_result_bytes) are 10 MiB, which
# a 10 MB argument clears by only 5%; the payload workload raises both to this.
PAYLOAD_LIMIT = 64 * 1024 * 1024


def noop(x: Any) -> Any:
    return x


def sleeper(s: float) -> float:
    time.sleep(s)
    return s


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _tree(pids: list[int]) -> Iterator[psutil.Process]:
    """The processes and their descendants, each once (one may descend from another)."""
    seen: set[int] = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid not in seen:
                seen.add(p.pid)
                yield p


def pss_mb(pids: list[int]) -> float:
    total = 0
    for p in _tree(pids):
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total / 1e6


def tree_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes and their children have used: less
    moved by other load on the machine than wall-clock rates are."""
    total = 0.0
    for p in _tree(pids):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def measure(ex: Executor, args: argparse.Namespace, pids: list[int]) -> dict[str, float]:
    """``pids``: the stack's processes (service, endpoint), whose CPU time, with this
    client's, the throughput workload reports per task."""
    only = set(args.only.split(","))
    r: dict[str, float] = {}
    if "lat" in only:
        samples = []
        for i in range(args.lat_n):
            t0 = time.perf_counter()
            assert ex.submit(noop, i).result() == i
            samples.append(time.perf_counter() - t0)
        r["lat_median_us"] = statistics.median(samples) * 1e6
        r["lat_p99_us"] = percentile(samples, 99) * 1e6
        r["lat_min_us"] = min(samples) * 1e6
    if "tp" in only:
        n = args.tp_n
        everyone = [os.getpid(), *pids]
        cpu0 = tree_cpu_s(everyone)
        parts0 = [tree_cpu_s([pid]) for pid in pids]  # service, endpoint (each a tree)
        t0 = time.perf_counter()
        futures = [ex.submit(noop, i) for i in range(n)]
        t1 = time.perf_counter()
        results = [f.result() for f in futures]
        t2 = time.perf_counter()
        assert results[-1] == n - 1 and len(results) == n
        r["tp_cpu_us_per_task"] = (tree_cpu_s(everyone) - cpu0) / n * 1e6
        for name, pid, before in zip(("service", "endpoint"), pids, parts0, strict=True):
            r[f"tp_cpu_{name}_us_per_task"] = (tree_cpu_s([pid]) - before) / n * 1e6
        r["tp_tasks_per_s"] = n / (t2 - t0)
        r["tp_submit_s"] = t1 - t0
        r["tp_total_s"] = t2 - t0
    if "sleep" in only:
        n = args.sleep_n
        t0 = time.perf_counter()
        futures = [ex.submit(sleeper, args.sleep_s) for _ in range(n)]
        [f.result() for f in futures]
        elapsed = time.perf_counter() - t0
        r["sleep_total_s"] = elapsed
        r["sleep_efficiency"] = (n * args.sleep_s / args.workers) / elapsed
    if "pay" in only:
        echo = payload.echo

        def submit_many(data: bytes, n: int) -> list[Any]:
            return [ex.submit(echo, data) for _ in range(n)]

        r.update(payload.measure(lambda data: ex.submit(echo, data).result(), submit_many,
                                 lambda fs: [f.result() for f in fs], scale=args.pay_scale))
    return r


def stack_env(only: set[str]) -> dict[str, str]:
    if "pay" not in only:
        return {}
    print(f"payload workload: service max_payload_bytes and max_result_bytes raised to "
          f"{PAYLOAD_LIMIT} (default 10 MiB)", file=sys.stderr, flush=True)
    return {"FUNCX_FLOWS_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT),
            "FUNCX_FLOWS_MAX_RESULT_BYTES": str(PAYLOAD_LIMIT)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lat-n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--tp-n", type=int, default=10000)
    ap.add_argument("--sleep-n", type=int, default=1000)
    ap.add_argument("--sleep-s", type=float, default=0.01)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--provider", default="local", choices=["local", "inline"],
                    help="local: a manager process per block; inline: workers forked "
                         "by the endpoint itself")
    ap.add_argument("--only", default="lat,tp,sleep")
    ap.add_argument("--pay-scale", type=float, default=1.0,
                    help="multiplies the payload workload's call counts")
    args = ap.parse_args()
    env = stack_env(set(args.only.split(",")))

    with tempfile.TemporaryDirectory(prefix="funcx-bench-") as tmp, \
            PeakPss(os.getpid()) as watch:
        stack = LocalStack(Path(tmp) / "home", env=env)
        try:
            t0 = time.perf_counter()
            stack.start_service()
            ep = stack.start_endpoint("bench", {"max_workers_per_node": args.workers,
                                                "provider": args.provider})
            startup = time.perf_counter() - t0
            client = stack.client()
            pids = [p.pid for p in (stack.service_proc, ep.proc) if p is not None]
            with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
                for i in range(args.warmup):
                    assert ex.submit(noop, i).result() == i
                idle_pss = pss_mb(pids)
                reps = []
                for rep in range(args.reps):
                    r = measure(ex, args, pids)
                    print(f"rep {rep}: {json.dumps({k: round(v, 2) for k, v in r.items()})}",
                          file=sys.stderr, flush=True)
                    reps.append(r)
                busy_pss = pss_mb(pids)
            client.close()
        finally:
            stack.stop()
    metrics = {
        k: {"median": statistics.median(r[k] for r in reps), "all": [r[k] for r in reps]}
        for k in reps[0]
    }
    print(json.dumps({
        "system": "funcx-flows",
        "metrics": metrics,
        "startup_s": startup,
        "pss_idle_mb": idle_pss,
        "pss_after_mb": busy_pss,
        # as the peers' harness reports it: the whole tree, this client included
        "rss": {"peak_total_tree_pss_mb": watch.peak_mib},
        "limits": {k.removeprefix("FUNCX_FLOWS_").lower(): int(v) for k, v in env.items()},
    }))


if __name__ == "__main__":
    main()
