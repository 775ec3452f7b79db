"""Soak: a million no-op tasks through a whole local stack, watching its memory and disk.

Issue 7 asks that the stack (service, endpoint agent with its interchange, manager,
workers) idles under 200 MB PSS and does not grow over a 1,000,000-task soak: RSS at
the end within 10 % of its value after the first 100,000 tasks, and the database
bounded by the result retention. This runs that soak and records what it sees::

    main thread:   submit in windows (<= --window in flight) --> Executor --> stack
    stream thread: result arrives -> done callback counts it, drops it (no history)
    sampler:       every --sample-s: tasks done, RSS/PSS per process, DB + WAL,
                   endpoint spool, the client's own RSS

The retention is passed as the service's own setting (``FUNCX_FLOWS_RESULT_RETENTION_S``
in the LocalStack's environment); the service purges every retention/4. At ~2,000
tasks/s the first 100,000 tasks end before the retention window has filled once (the
database and the service's caches are still warming), so one sample at 100k can sit
low; the summary also gives each process's median RSS just after the baseline and
over the last quarter, which tells drift from a purge's or a burst's spike.

    python benchmarks/soak.py [--tasks 1000000] [--retention-s 60] [--out benchmarks/results]

Writes ``soak-<stamp>.json`` (time series and summary) and ``soak-<stamp>.png``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from funcx_flows.localstack import LocalStack, RunningEndpoint
from funcx_flows.sdk.executor import Executor

MB = 1024 * 1024


def noop(x: Any) -> Any:
    return x


# ------------------------------------------------------------- processes --


@dataclass
class ProcMem:
    role: str
    pid: int
    rss: int
    pss: int


def _mem(proc: psutil.Process, role: str) -> ProcMem | None:
    try:
        info = proc.memory_full_info()
    except psutil.Error:
        return None
    return ProcMem(role, proc.pid, info.rss, getattr(info, "pss", 0))


def stack_processes(stack: LocalStack, ep: RunningEndpoint) -> list[tuple[str, psutil.Process]]:
    """Every process of the stack with its role: the service and its tree, the
    endpoint's agent (the interchange runs in its loop), its managers and their
    workers (or, with inline blocks, its own workers). Roles are stable names; a
    restarted worker keeps its role."""
    found: list[tuple[str, psutil.Process]] = []
    if stack.service_proc is not None:
        with contextlib.suppress(psutil.Error):
            service = psutil.Process(stack.service_proc.pid)
            found.append(("service", service))
            found += [(f"service-child-{i}", c)
                      for i, c in enumerate(service.children(recursive=True), 1)]
    try:
        agent = psutil.Process(ep.proc.pid)
        children = sorted(agent.children(), key=lambda p: p.pid)
        managers = [c for c in children if _is_manager(c)]
    except psutil.Error:
        return found
    found.append(("agent", agent))
    # inline blocks: the workers are the agent's own children
    found += [(f"worker-{i}", w) for i, w in
              enumerate((c for c in children if c not in managers), 1)]
    for i, manager in enumerate(managers, 1):
        name = "manager" if len(managers) == 1 else f"manager-{i}"
        found.append((name, manager))
        with contextlib.suppress(psutil.Error):
            workers = sorted(manager.children(recursive=True), key=lambda p: p.pid)
            found += [(f"worker-{i}" if len(managers) == 1 else f"{name}-worker-{i}", w)
                      for i, w in enumerate(workers, 1)]
    return found


def _is_manager(proc: psutil.Process) -> bool:
    try:
        return "funcx_flows.endpoint.manager" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def stack_memory(stack: LocalStack, ep: RunningEndpoint) -> list[ProcMem]:
    return [m for role, p in stack_processes(stack, ep) if (m := _mem(p, role)) is not None]


# ------------------------------------------------------------------ disk --


def _size(*paths: Path) -> int:
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


def sqlite_sizes(db: Path) -> tuple[int, int]:
    """(main file, WAL + shared memory) in bytes."""
    return _size(db), _size(db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))


def task_rows(db: Path) -> int | None:
    """Rows in the service's task table (read only, one short query)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


# --------------------------------------------------------------- sampling --


@dataclass
class Sample:
    t: float
    done: int
    failed: int
    procs: list[ProcMem]
    db_bytes: int
    db_wal_bytes: int
    db_task_rows: int | None
    spool_bytes: int
    client_rss: int


@dataclass
class Counter:
    """In-flight window and completion count, shared with the stream thread."""

    limit: int
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    first_error: str = ""
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_done(self, future: cf.Future[Any]) -> None:
        exc = None if future.cancelled() else future.exception()
        with self.cond:
            self.in_flight -= 1
            self.done += 1
            if future.cancelled() or exc is not None:
                self.failed += 1
                self.first_error = self.first_error or repr(exc or "cancelled")
            self.cond.notify_all()


class Sampler:
    def __init__(self, stack: LocalStack, ep: RunningEndpoint, counter: Counter,
                 period: float, t0: float, seen_pids: set[int]) -> None:
        self.stack, self.ep, self.counter, self.period, self.t0 = stack, ep, counter, period, t0
        self.db = stack.home / "service" / "service.db"
        self.spool = ep.folder / "spool.db"
        self.samples: list[Sample] = []
        self.seen_pids = seen_pids  # shared: what to check for leftovers
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def sample(self) -> Sample:
        with self.counter.cond:
            done, failed = self.counter.done, self.counter.failed
        procs = stack_memory(self.stack, self.ep)
        self.seen_pids.update(p.pid for p in procs)
        db, wal = sqlite_sizes(self.db)
        s = Sample(round(time.monotonic() - self.t0, 2), done, failed, procs, db, wal,
                   task_rows(self.db), sum(sqlite_sizes(self.spool)),
                   self._me.memory_info().rss)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# ------------------------------------------------------------------ soak --


def run_tasks(ex: Executor, fid: str, n: int, counter: Counter, progress: Progress,
              bar: Any, chunk: int, stall_s: float) -> None:
    """Keep at most ``counter.limit`` tasks in flight; hold on to no future."""
    submitted = 0
    last_done, last_change = 0, time.monotonic()
    while True:
        with counter.cond:
            counter.cond.wait_for(
                lambda: counter.in_flight <= counter.limit - chunk or counter.done >= n,
                timeout=0.5)
            done, room = counter.done, counter.limit - counter.in_flight
            if submitted < n and room >= min(chunk, n - submitted):
                k = min(chunk, n - submitted)
                counter.in_flight += k
            else:
                k = 0
        for i in range(submitted, submitted + k):
            ex.submit_to_registered_function(fid, (i,)).add_done_callback(counter.on_done)
        submitted += k
        progress.update(bar, completed=done)
        if done >= n:
            return
        now = time.monotonic()
        if done != last_done:
            last_done, last_change = done, now
        elif now - last_change > stall_s:
            raise RuntimeError(f"no task finished for {stall_s:.0f}s ({done}/{n} done, "
                               f"{counter.in_flight} in flight)")


def settle_pss(stack: LocalStack, ep: RunningEndpoint, seconds: float) -> list[ProcMem]:
    time.sleep(seconds)
    return stack_memory(stack, ep)


def by_role(procs: list[ProcMem]) -> dict[str, ProcMem]:
    return {p.role: p for p in procs}


def summarize(samples: list[Sample], n: int, baseline_at: int, wall_s: float,
              soak_s: float, idle_before: list[ProcMem], idle_after: list[ProcMem],
              counter: Counter, args: argparse.Namespace) -> dict[str, Any]:
    base = next((s for s in samples if s.done >= baseline_at), samples[0])
    end = samples[-1]
    b, e = by_role(base.procs), by_role(end.procs)
    # One sample is noisy (a purge, a burst): medians over the stretch after the
    # baseline and over the last quarter tell drift from noise.
    early = [s for s in samples if base.done <= s.done < base.done + (n - base.done) // 4]
    late = [s for s in samples if s.done >= n - n // 4]

    def median_rss(stretch: list[Sample], role: str) -> float:
        values = [p.rss for s in stretch for p in s.procs if p.role == role]
        return statistics.median(values) / MB if values else 0.0

    per_proc = {}
    for role in b:
        if role not in e:
            continue
        m_early, m_late = median_rss(early, role), median_rss(late, role)
        per_proc[role] = {
            "rss_after_baseline_mb": round(b[role].rss / MB, 1),
            "rss_end_mb": round(e[role].rss / MB, 1),
            "ratio": round(e[role].rss / b[role].rss, 3) if b[role].rss else None,
            "rss_median_after_baseline_mb": round(m_early, 1),
            "rss_median_last_quarter_mb": round(m_late, 1),
            "median_ratio": round(m_late / m_early, 3) if m_early else None,
            "rss_max_mb": round(max(p.rss for s in samples for p in s.procs
                                    if p.role == role) / MB, 1),
            "pid_changed": b[role].pid != e[role].pid,
        }
    half = [s for s in samples if s.done >= n // 2]
    first = [s for s in samples if s.done < n // 2]

    def db_total(s: Sample) -> int:
        return s.db_bytes + s.db_wal_bytes

    client_base = base.client_rss
    return {
        "tasks": n,
        "failed": counter.failed,
        "first_error": counter.first_error,
        "retention_s": args.retention_s,
        "window": args.window,
        "workers": args.workers,
        "baseline_at_tasks": base.done,
        "baseline_at_s": base.t,
        "rss_per_process": per_proc,
        "max_ratio": max((v["ratio"] or 0) for v in per_proc.values()) if per_proc else None,
        "client_rss_baseline_mb": round(client_base / MB, 1),
        "client_rss_end_mb": round(end.client_rss / MB, 1),
        "idle_pss_before_mb": round(sum(p.pss for p in idle_before) / MB, 1),
        "idle_pss_before_per_process_mb": {p.role: round(p.pss / MB, 1) for p in idle_before},
        "idle_pss_after_mb": round(sum(p.pss for p in idle_after) / MB, 1),
        "idle_pss_after_per_process_mb": {p.role: round(p.pss / MB, 1) for p in idle_after},
        "db_max_mb": round(max(db_total(s) for s in samples) / MB, 1),
        "db_end_mb": round(db_total(end) / MB, 1),
        "db_max_first_half_mb": round(max((db_total(s) for s in first), default=0) / MB, 1),
        "db_max_second_half_mb": round(max((db_total(s) for s in half), default=0) / MB, 1),
        "db_wal_max_mb": round(max(s.db_wal_bytes for s in samples) / MB, 1),
        "db_task_rows_max": max((s.db_task_rows or 0) for s in samples),
        "db_task_rows_end": end.db_task_rows,
        "spool_max_mb": round(max(s.spool_bytes for s in samples) / MB, 1),
        "tasks_per_s": round(n / soak_s, 1),
        "soak_s": round(soak_s, 1),
        "wall_s": round(wall_s, 1),
    }


def plot(samples: list[Sample], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = sorted({p.role for s in samples for p in s.procs})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for role in roles:
        xs = [s.done for s in samples if role in by_role(s.procs)]
        ys = [by_role(s.procs)[role].rss / MB for s in samples if role in by_role(s.procs)]
        ax1.plot(xs, ys, label=role)
    ax1.plot([s.done for s in samples], [s.client_rss / MB for s in samples],
             label="client", linestyle="--")
    ax1.set_ylabel("RSS (MB)")
    ax1.set_title(title)
    ax1.legend(fontsize="small", ncol=3)
    ax1.grid(alpha=0.3)
    xs = [s.done for s in samples]
    ax2.plot(xs, [s.db_bytes / MB for s in samples], label="service.db")
    ax2.plot(xs, [s.db_wal_bytes / MB for s in samples], label="service.db WAL + shm")
    ax2.plot(xs, [s.spool_bytes / MB for s in samples], label="endpoint spool")
    ax2.set_ylabel("size (MB)")
    ax2.set_xlabel("tasks done")
    ax2.legend(fontsize="small")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kill_leftovers(pids: set[int]) -> None:
    """After the stack stopped: end any process of it still alive (only those, by pid)."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            print(f"soak: process {pid} ({proc.name()}) outlived the stack; killing it",
                  file=sys.stderr)
            proc.kill()


@dataclass
class Outcome:
    sampler: Sampler
    idle_before: list[ProcMem]
    idle_after: list[ProcMem]
    soak_s: float


def _progress_reporter(console: Console, progress: Progress, bar: Any, counter: Counter,
                       sampler: Sampler, total: int, stop: threading.Event) -> None:
    """Rate and stack size on the bar; on a file or pipe (no live bar) a line every 30 s."""
    ticks = 0
    while not stop.wait(2.0):
        ticks += 1
        elapsed = time.monotonic() - sampler.t0
        last = sampler.samples[-1] if sampler.samples else None
        size = (f" stack RSS {sum(p.rss for p in last.procs) / MB:.0f} MB, "
                f"db {(last.db_bytes + last.db_wal_bytes) / MB:.0f} MB" if last else "")
        rate = f"{counter.done / elapsed:,.0f}/s{size}"
        progress.update(bar, rate=rate)
        if not console.is_terminal and ticks % 15 == 0:
            console.print(f"{elapsed:6.0f}s {counter.done:,}/{total:,} {rate}")


def soak(stack: LocalStack, args: argparse.Namespace, counter: Counter, seen: set[int],
         console: Console) -> Outcome:
    stack.start_service()
    ep = stack.start_endpoint("soak", {"max_workers_per_node": args.workers,
                                       "provider": args.provider})
    client = stack.client()
    ex = Executor(endpoint_id=ep.endpoint_id, client=client)
    finished = False
    sampler: Sampler | None = None
    try:
        fid = client.register_function(noop)
        for i in range(200):  # warm up: every process has run a task
            assert ex.submit_to_registered_function(fid, (i,)).result(60) == i
        idle_before = settle_pss(stack, ep, 5.0)
        console.print(f"idle PSS of the stack: {sum(p.pss for p in idle_before) / MB:.1f} MB ("
                      + ", ".join(f"{p.role} {p.pss / MB:.1f}" for p in idle_before) + ")")
        sampler = Sampler(stack, ep, counter, args.sample_s, time.monotonic(), seen)
        sampler.sample()
        sampler.start()
        columns = (TextColumn("soak"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("soak", total=args.tasks, rate="")
            stop = threading.Event()
            reporter = threading.Thread(target=_progress_reporter, daemon=True, args=(
                console, progress, bar, counter, sampler, args.tasks, stop))
            reporter.start()
            try:
                run_tasks(ex, fid, args.tasks, counter, progress, bar, args.chunk, args.stall_s)
            finally:
                stop.set()
                reporter.join()
        soak_s = time.monotonic() - sampler.t0
        sampler.stop()
        sampler.sample()
        idle_after = settle_pss(stack, ep, 5.0)
        finished = True
        return Outcome(sampler, idle_before, idle_after, soak_s)
    finally:
        if sampler is not None:
            sampler.stop()
        # After a failure, do not wait for tasks in flight: the stack is stopped next.
        ex.shutdown(wait=finished)
        client.close()


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the stack stops


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--retention-s", type=float, default=60.0,
                    help="the service's result retention; it purges every retention/4")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--window", type=int, default=20_000, help="most tasks in flight")
    ap.add_argument("--chunk", type=int, default=2_000, help="tasks submitted at a time")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--provider", default="local", choices=["local", "inline"],
                    help="local: a manager process per block; inline: workers forked "
                         "by the endpoint itself")
    ap.add_argument("--sample-s", type=float, default=3.0)
    ap.add_argument("--baseline", type=int, default=100_000,
                    help="tasks after which the baseline RSS is taken (at most --tasks/10)")
    ap.add_argument("--stall-s", type=float, default=300.0,
                    help="give up when no task finishes for this long")
    args = ap.parse_args(argv)
    if args.tasks < 1 or args.window < 1 or args.chunk < 1:
        ap.error("--tasks, --window and --chunk must be positive")
    args.chunk = min(args.chunk, args.window)
    baseline_at = min(args.baseline, max(1, args.tasks // 10))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    console = Console(stderr=True)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with &
    wall0 = time.monotonic()
    counter = Counter(args.window)
    seen: set[int] = set()  # every pid of the stack the sampler met
    with tempfile.TemporaryDirectory(prefix="funcx-soak-") as tmp:
        stack = LocalStack(Path(tmp) / "home",
                           env={"FUNCX_FLOWS_RESULT_RETENTION_S": str(args.retention_s)})
        try:
            outcome = soak(stack, args, counter, seen, console)
        finally:
            stack.stop()
            kill_leftovers(seen)
    wall_s = time.monotonic() - wall0
    samples = outcome.sampler.samples
    summary = summarize(samples, args.tasks, baseline_at, wall_s, outcome.soak_s,
                        outcome.idle_before, outcome.idle_after, counter, args)
    out_json = args.out / f"soak-{stamp}.json"
    out_png = args.out / f"soak-{stamp}.png"
    out_json.write_text(json.dumps({"summary": summary,
                                    "samples": [asdict(s) for s in samples]}, indent=1))
    plot(samples, out_png, f"soak: {args.tasks:,} no-op tasks, retention {args.retention_s:g}s, "
                           f"{summary['tasks_per_s']:,.0f} tasks/s")
    console.print_json(json.dumps(summary))
    console.print(f"wrote {out_json} and {out_png}")
    return 1 if counter.failed else 0


if __name__ == "__main__":
    sys.exit(main())
