"""The service store's hot paths in one process, on SQLite: what a submission and a
result cost the event loop, without sockets or other processes.

    python benchmarks/bench_store.py [--n 400] [--batches 40] [--only submit1,...]

Each workload runs on the loop's pinned connection, as in the service, with the
finished records handed to a publisher as the dispatcher's outbox takes them.
Prints one JSON line: microseconds per call (median of the calls), per workload:

- ``auth``: a token checked (every request does it, uncached)
- ``submit1`` / ``complete1``: one task stored for an online endpoint, one result
- ``submit100`` / ``complete100``: batches of 100 (per batch)
- ``cancel1``: one task cancelled by its owner
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from funcx_flows import messages as m
from funcx_flows.service.db import make_engine
from funcx_flows.service.store import Store

WORKLOADS = ("auth", "submit1", "complete1", "submit100", "complete100", "cancel1")


class Clock:
    """Microseconds since the last ``lap`` (or since made)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        took, self.t = (now - self.t) * 1e6, now
        return took


def run(folder: Path, n: int, batches: int, only: set[str]) -> dict[str, float]:
    engine = make_engine(f"sqlite:///{folder / 'service.db'}")
    store = Store(engine)
    store.create_schema()
    published: list[Any] = []
    store.publish_with(published.extend)
    store.pin_connection()
    user = store.ensure_user("bench")
    _, token = store.create_token(user, "bench")
    fid, _ = store.register_function(user, "f", "", b"FXF-" + b"b" * 200)
    eid, _ = store.register_endpoint(user, "ep", "k" * 40, {})
    online = {eid}
    payload = b"p" * 300  # a small pickled call's size
    item = {"function_id": fid, "endpoint_id": eid, "payload": payload, "group_id": "g"}
    out: dict[str, list[float]] = {w: [] for w in WORKLOADS if w in only}

    def result(task_id: str) -> m.TaskResult:
        return m.TaskResult(task_id=task_id, ok=True, data=b"r" * 200, stdout="",
                            started_at=time.time(), finished_at=time.time())

    for _ in range(50):  # warm caches and statements
        ids, _, _ = store.submit(user, [item], online)
        store.complete(eid, [result(ids[0])])
    def note(workload: str, took: float) -> None:
        if workload in out:
            out[workload].append(took)

    for _ in range(n):
        clock = Clock()
        store.authenticate(token)
        note("auth", clock.lap())
        ids, _, _ = store.submit(user, [item], online)
        note("submit1", clock.lap())
        store.complete(eid, [result(ids[0])])
        note("complete1", clock.lap())
        if "cancel1" in out:
            ids, _, _ = store.submit(user, [item], online)
            clock.lap()
            store.cancel(user, ids)
            note("cancel1", clock.lap())
        published.clear()
    for _ in range(batches if {"submit100", "complete100"} & out.keys() else 0):
        clock = Clock()
        ids, _, _ = store.submit(user, [item] * 100, online)
        note("submit100", clock.lap())
        results = [result(tid) for tid in ids]
        clock.lap()
        store.complete(eid, results)
        note("complete100", clock.lap())
        published.clear()
    store.unpin_connection()
    engine.dispose()
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=400, help="single-task rounds")
    ap.add_argument("--batches", type=int, default=40, help="rounds of 100-task batches")
    ap.add_argument("--only", default=",".join(WORKLOADS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="funcx-bench-store-") as tmp:
        r = run(Path(tmp), args.n, args.batches, set(args.only.split(",")))
    print(json.dumps({k: round(v, 1) for k, v in r.items()}))


if __name__ == "__main__":
    main()
