"""What PostgreSQL allows first (issue 17), on the shared server of the tests.

K processes stand for K replicas: each has its own engine and Store, as a
replica would, on the database of FUNCX_FLOWS_TEST_POSTGRES_URL (its schema is
dropped and made again). Per K in (1, 2, 4), for --pg-seconds each:

    commit      a one-row INSERT per transaction (synchronous_commit on; and off, K=1)
    submit      Store.submit of one task, the hot path of every submission
    complete    Store.complete of one result (and of 8), the hot path of every result
    seq         the store's sequence-number UPDATE of the counters row, alone
    +notify     commit, submit and complete with a NOTIFY of ~100 bytes in every
                transaction, one LISTENing process draining them (what a replica
                would hear); PostgreSQL holds a cluster-wide lock from a notifying
                transaction's pre-commit until its commit is durable

Each gives transactions/s and tasks/s summed over the processes, latency per
call (median, p99), the client's CPU per call (process_time: the store's Python,
SQLAlchemy and psycopg) and the server's (the CPU of the backends that served
the process's connections).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import time
import uuid
from typing import Any

import psutil

URL = os.environ.get("FUNCX_FLOWS_TEST_POSTGRES_URL", "")
NOTIFY_BODY = json.dumps({"kind": "results", "user": str(uuid.uuid4()), "seq": 123456789,
                          "t": 1234567890123456789})


# what every finishing transaction of the store does first (Store._next_seqs); its
# row lock is held until the commit is on disk, so these transactions queue
SEQ_SQL = "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value"


def fsync_per_s() -> float:
    """pg_test_fsync's fdatasync (PostgreSQL's wal_sync_method here), one 8 kB write
    then a flush, in /tmp (the disk of the shared server's data too)."""
    import re
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["/usr/lib/postgresql/15/bin/pg_test_fsync", "-s", "2", "-f",
                              f"{tmp}/f"], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"one 8kB write:.*?\n\s+fdatasync\s+([\d.]+) ops/sec", out, re.S)
    return float(m.group(1)) if m else float("nan")


def _setup() -> dict[str, str]:
    from sqlalchemy import text

    from funcx_flows.service.db import make_engine
    from funcx_flows.service.store import Store

    engine = make_engine(URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
        conn.execute(text("CREATE TABLE bench_commits (id bigserial PRIMARY KEY, v text)"))
    store = Store(engine)
    store.create_schema()
    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    engine.dispose()
    return {"user_id": alice.user_id, "function_id": fid, "endpoint_id": eid}


def _backends_cpu(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _worker(ids: dict[str, str], test: str, seconds: float, notify: bool,
            barrier: Any, out: Any) -> None:
    from sqlalchemy import event

    from funcx_flows.messages import TaskResult
    from funcx_flows.service.db import make_engine
    from funcx_flows.service.store import Store, User

    engine = make_engine(URL)
    pids: set[int] = set()

    @event.listens_for(engine, "connect")
    def _pid(dbapi_conn: Any, _rec: Any) -> None:
        pids.add(dbapi_conn.info.backend_pid)

    if notify and not (test.startswith("commit") or test == "seq"):
        @event.listens_for(engine, "commit")
        def _notify(conn: Any) -> None:
            conn.connection.dbapi_connection.execute(
                "SELECT pg_notify('funcx_bus', %s)", (NOTIFY_BODY,))

    store = Store(engine)
    alice = User(ids["user_id"], "alice")
    item = {"function_id": ids["function_id"], "endpoint_id": ids["endpoint_id"],
            "payload": b"x" * 100}
    online = {ids["endpoint_id"]}
    batch = 8 if test == "complete8" else 1
    todo: list[str] = []
    if test.startswith("complete"):  # tasks to finish, made before the clock starts
        n = int(seconds * (1000 if batch == 1 else 4800))
        for _ in range(0, n, 256):
            todo += store.submit(alice, [item] * 256, online=online)[0]
    raw = None
    raw_sql = SEQ_SQL if test == "seq" else "INSERT INTO bench_commits (v) VALUES ('x')"
    if notify:  # one simple query: both statements in one transaction, one round trip
        raw_sql += f"; SELECT pg_notify('funcx_bus', '{NOTIFY_BODY}')"
    if test.startswith("commit") or test == "seq":
        raw = engine.raw_connection()
        raw.dbapi_connection.autocommit = True
        if test == "commit-async":
            raw.dbapi_connection.execute("SET synchronous_commit = off")
    with engine.connect():  # a pooled connection, so its backend is counted
        pass
    lat: list[float] = []
    barrier.wait()
    server0, cpu0, t0 = _backends_cpu(pids), time.process_time(), time.monotonic()
    end, calls, tasks = t0 + seconds, 0, 0
    while time.monotonic() < end:
        c0 = time.perf_counter()
        if raw is not None:
            raw.dbapi_connection.execute(raw_sql)
        elif test == "submit":
            store.submit(alice, [item], online=online)
        else:
            if len(todo) < batch:
                break
            done, todo = todo[:batch], todo[batch:]
            store.complete(ids["endpoint_id"],
                           [TaskResult(task_id=t, ok=True, data=b"r" * 100) for t in done])
        lat.append(time.perf_counter() - c0)
        calls += 1
        tasks += batch
    elapsed = time.monotonic() - t0
    cpu, server = time.process_time() - cpu0, _backends_cpu(pids) - server0
    if raw is not None:
        raw.close()
    engine.dispose()
    out.put({"calls": calls, "tasks": tasks, "elapsed": elapsed, "lat": lat,
             "cpu": cpu, "server": server})


def _listener(stop: Any, got: Any) -> None:
    import psycopg

    url = URL.replace("postgresql+psycopg://", "postgresql://")
    n = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN funcx_bus")
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.1):
                n += 1
        for _ in conn.notifies(timeout=1.0):  # what was committed before the stop
            n += 1
    got.put(n)


def measure(ids: dict[str, str], test: str, k: int, seconds: float,
            notify: bool) -> dict[str, float]:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    stop, heard = ctx.Event(), ctx.Queue()
    listener = None
    if notify:
        listener = ctx.Process(target=_listener, args=(stop, heard), daemon=True)
        listener.start()
    procs = [ctx.Process(target=_worker, args=(ids, test, seconds, notify, barrier, out))
             for _ in range(k)]
    for p in procs:
        p.start()
    res = [out.get(timeout=seconds * 4 + 300) for _ in procs]
    for p in procs:
        p.join(30)
    if listener is not None:
        stop.set()
    heard_n = heard.get(timeout=30) if listener is not None else 0
    if listener is not None:
        listener.join(10)
    lat = sorted(x for r in res for x in r["lat"])
    calls = sum(r["calls"] for r in res)
    span = max(r["elapsed"] for r in res)
    return {"tx_per_s": calls / span, "tasks_per_s": sum(r["tasks"] for r in res) / span,
            "lat_median_ms": statistics.median(lat) * 1e3,
            "lat_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3,
            "client_cpu_us": sum(r["cpu"] for r in res) / calls * 1e6,
            "server_cpu_us": sum(r["server"] for r in res) / calls * 1e6,
            "notifications_heard": float(heard_n)}


# (test, processes, notify)
CASES = [("commit", 1, False), ("commit", 2, False), ("commit", 4, False),
         ("commit-async", 1, False), ("seq", 1, False), ("seq", 4, False),
         ("submit", 1, False), ("submit", 2, False), ("submit", 4, False),
         ("complete", 1, False), ("complete", 2, False), ("complete", 4, False),
         ("complete8", 1, False), ("complete8", 4, False),
         ("commit", 1, True), ("commit", 4, True),
         ("submit", 1, True), ("submit", 4, True),
         ("complete", 1, True), ("complete", 4, True)]


def case_name(test: str, k: int, notify: bool) -> str:
    return f"{test}{'+notify' if notify else ''} x{k}"


def run(rounds: int, seconds: float) -> dict[str, Any]:
    if not URL.startswith("postgresql"):
        raise SystemExit("part pg: set FUNCX_FLOWS_TEST_POSTGRES_URL to your own database")
    from sqlalchemy.engine import make_url

    ids = _setup()
    out: dict[str, Any] = {"database": make_url(URL).render_as_string(hide_password=True),
                           "rounds": []}
    for rnd in range(rounds):
        row: dict[str, Any] = {"fsync_per_s": fsync_per_s()}
        print(f"pg round {rnd + 1}: pg_test_fsync fdatasync {row['fsync_per_s']:.0f}/s")
        order = CASES[rnd:] + CASES[:rnd] if rnd else CASES
        for test, k, notify in order:
            name = case_name(test, k, notify)
            row[name] = measure(ids, test, k, seconds, notify)
            m = row[name]
            print(f"pg round {rnd + 1} {name}: {m['tx_per_s']:.0f} tx/s, "
                  f"{m['tasks_per_s']:.0f} tasks/s, median {m['lat_median_ms']:.2f} ms, "
                  f"p99 {m['lat_p99_ms']:.2f} ms, client {m['client_cpu_us']:.0f} us, "
                  f"server {m['server_cpu_us']:.0f} us", flush=True)
        out["rounds"].append(row)
    return out
