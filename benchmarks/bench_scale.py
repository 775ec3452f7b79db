"""One interchange, thousands of worker slots: how fast does it place tasks?

A real ``Interchange``, driven by a thread of this process as the agent's loop
drives it, is fed over an inproc PAIR; simulated managers (``tests/simulated.py``:
DEALER sockets that speak the manager protocol and answer every task at once)
live in a few other processes. No service, no workers: what is measured is the
interchange's own dispatch rate, end to end from the first task fed to the last
result back. Prints ONE JSON line (as bench_funcx.py does), progress on stderr.

CPU is reported three ways: the interchange thread alone, this whole process (the
interchange, the feeder standing in for the agent, and libzmq's I/O thread), and
the simulated managers; per task as well as in % of one core, because on a shared
machine the rate follows the CPU share this run gets while CPU per task does not.
Every task must come back exactly once, or the run exits non-zero.

    python benchmarks/bench_scale.py [--managers 80 --slots 100 --tasks 200000] [--plot out.png]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from simulated import (
    FeedReport,
    InterchangeHost,
    ManagerFleet,
    feed,
    noop_spec_factory,
)

from funcx_flows import serialize


def noop(x: Any) -> Any:
    return x


@dataclass
class Sample:
    at: float
    host_cpu_s: float  # this process: the interchange thread and the feeder
    interchange_cpu_s: float
    managers_cpu_s: float
    rss_mb: float


@dataclass
class Monitor:
    """Samples CPU times and RSS of this process, its interchange thread and the fleet."""

    thread_id: int | None
    manager_pids: list[int]
    period_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> Sample:
        me = psutil.Process()
        with me.oneshot():
            t = me.cpu_times()
            rss = me.memory_info().rss / 1e6
            ix = sum(th.user_time + th.system_time for th in me.threads()
                     if th.id == self.thread_id)
        fleet = 0.0
        for pid in self.manager_pids:
            with contextlib.suppress(psutil.Error):
                ct = psutil.Process(pid).cpu_times()
                fleet += ct.user + ct.system
        s = Sample(time.monotonic(), t.user + t.system, ix, fleet, rss)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sample()


def summarize(report: FeedReport, mon: Monitor, answered: dict[str, int]) -> dict[str, Any]:
    first, last = mon.samples[0], mon.samples[-1]
    wall = max(last.at - first.at, 1e-9)
    # the rate while the pipeline is full: from the 10th to the 90th percentile result
    reached = [0]
    for c in report.per_bucket:
        reached.append(reached[-1] + c)
    t10 = next((i for i, r in enumerate(reached) if r >= 0.1 * report.n), 0)
    t90 = next((i for i, r in enumerate(reached) if r >= 0.9 * report.n), len(reached) - 1)
    steady = 0.8 * report.n / max((t90 - t10) * report.bucket_s, report.bucket_s)
    first_result = next((i for i, c in enumerate(report.per_bucket) if c), 0)
    return {
        "tasks": report.n,
        "results_unique": report.received,
        "missing": report.missing,
        "duplicates": report.duplicates,
        "failed": report.failed,
        "stalled": report.stalled,
        "elapsed_s": round(report.elapsed_s, 3),
        "tasks_per_s": round(report.tasks_per_s, 1),
        "steady_tasks_per_s": round(steady, 1),
        "first_result_s": round(first_result * report.bucket_s, 1),
        "managers_seen": report.max_managers_seen,
        "slots_seen": report.max_slots_seen,
        "managers_with_work": sum(1 for a in answered.values() if a),
        "tasks_per_manager_min": min(answered.values(), default=0),
        "tasks_per_manager_max": max(answered.values(), default=0),
        "interchange_thread_cpu_pct": round(
            100 * (last.interchange_cpu_s - first.interchange_cpu_s) / wall, 1),
        "interchange_cpu_us_per_task": round(
            1e6 * (last.interchange_cpu_s - first.interchange_cpu_s) / report.n, 2),
        "host_cpu_us_per_task": round(1e6 * (last.host_cpu_s - first.host_cpu_s) / report.n, 2),
        "host_process_cpu_pct": round(100 * (last.host_cpu_s - first.host_cpu_s) / wall, 1),
        "managers_cpu_pct": round(100 * (last.managers_cpu_s - first.managers_cpu_s) / wall, 1),
        "host_rss_mb_peak": round(max(s.rss_mb for s in mon.samples), 1),
        "host_rss_mb_before": round(first.rss_mb, 1),
    }


def plot(report: FeedReport, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [i * report.bucket_s for i in range(len(report.per_bucket))]
    rates = [c / report.bucket_s for c in report.per_bucket]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(times, rates, drawstyle="steps-post")
    ax.axhline(5000, color="grey", linestyle="--", linewidth=0.8, label="5,000 tasks/s goal")
    ax.set_xlabel("seconds since the first task was fed")
    ax.set_ylabel(f"results per second ({report.bucket_s:g} s bins)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--managers", type=int, default=80)
    ap.add_argument("--slots", type=int, default=100, help="worker slots per manager")
    ap.add_argument("--procs", type=int, default=2,
                    help="processes the simulated managers are spread over")
    ap.add_argument("--prefetch", type=int, default=0, help="extra credits per manager")
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=512,
                    help="tasks per Tasks message to the interchange (the service sends 512)")
    ap.add_argument("--window", type=int, default=0,
                    help="most tasks fed and not yet answered (0: feed all at once)")
    ap.add_argument("--plot", default="", help="write the rate over time to this PNG")
    args = ap.parse_args()
    slots = args.managers * args.slots
    load_before = round(os.getloadavg()[0], 2)
    make = noop_spec_factory(serialize.pack_function(noop), serialize.pack_call((1,), {}))
    result = serialize.pack(1)

    def progress(report: FeedReport, received: int) -> None:
        print(f"  {received:>9,} / {report.n:,} results", file=sys.stderr, flush=True)

    host = InterchangeHost()
    fleet = ManagerFleet(host.url, args.managers, args.slots, procs=args.procs,
                         prefetch=args.prefetch, result=result)
    answered: dict[str, int] = {}
    try:
        t0 = time.monotonic()
        fleet.start()
        host.wait_for_slots(args.managers, slots, timeout_s=120)
        print(f"{args.managers} managers, {slots:,} slots registered in "
              f"{time.monotonic() - t0:.1f}s; feeding {args.tasks:,} tasks",
              file=sys.stderr, flush=True)
        mon = Monitor(host.thread_native_id, fleet.pids)
        mon.start()
        try:
            report = feed(host, args.tasks, make, batch=args.batch, window=args.window,
                          progress=progress)
        finally:
            mon.stop()
    finally:
        answered = fleet.stop()
        host.close()
    metrics = summarize(report, mon, answered)
    print(json.dumps({
        "system": "funcx-flows",
        "benchmark": "scale",
        "config": {"managers": args.managers, "slots_per_manager": args.slots, "slots": slots,
                   "manager_procs": args.procs, "prefetch": args.prefetch, "batch": args.batch,
                   "window": args.window, "cpus": os.cpu_count(),
                   "loadavg_1m_before": load_before,
                   "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "metrics": metrics,
    }))
    if args.plot:
        plot(report, args.plot, f"one interchange, {args.managers} simulated managers x "
                                f"{args.slots} slots: {metrics['tasks_per_s']:,.0f} tasks/s")
    ok = (metrics["missing"] == 0 and metrics["duplicates"] == 0 and metrics["failed"] == 0
          and not report.stalled)
    if not ok:
        sys.exit("not every task came back exactly once (see missing/duplicates/failed)")


if __name__ == "__main__":
    main()
