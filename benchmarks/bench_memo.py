"""Memoization (the funcX paper's optimisation) on a 50%-duplicate workload.

Wave 1 runs N distinct calls; wave 2 runs N calls of which half repeat wave-1
inputs. Wave 2 is timed with and without memoization, on the full path, and the
speedup printed as JSON.

    python benchmarks/bench_memo.py --n 1000 --work-ms 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor


def analysis(x: int, work_ms: float) -> int:
    import time

    time.sleep(work_ms / 1000)
    return x * 2


def wave2_seconds(ex: Executor, n: int, work_ms: float, offset: int) -> float:
    first = [ex.submit(analysis, offset + i, work_ms) for i in range(n)]
    [f.result(timeout=600) for f in first]
    repeat = [offset + i for i in range(0, n, 2)] + [offset + n + i for i in range(n // 2)]
    start = time.perf_counter()
    second = [ex.submit(analysis, x, work_ms) for x in repeat]
    assert [f.result(timeout=600) for f in second] == [x * 2 for x in repeat]
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--work-ms", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp) / "home")
        try:
            stack.start_service()
            ep = stack.start_endpoint("bench", {"max_workers_per_node": a.workers})
            client = stack.client()
            with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
                plain = wave2_seconds(ex, a.n, a.work_ms, 0)
            with Executor(endpoint_id=ep.endpoint_id, client=client, memoize=True) as ex:
                memo = wave2_seconds(ex, a.n, a.work_ms, 10 * a.n)
            client.close()
        finally:
            stack.stop()
    print(json.dumps({"n": a.n, "work_ms": a.work_ms, "duplicates": 0.5,
                      "plain_s": round(plain, 3), "memoized_s": round(memo, 3),
                      "speedup": round(plain / memo, 2)}))


if __name__ == "__main__":
    main()
