"""The dashboard's cost (issue 24), in one invocation:

    path      the task path with the dashboard left out (FUNCX_FLOWS_DASHBOARD=false)
              and with it in, nobody viewing: bench_funcx.py's no-op latency
              (sequential) and 10,000 no-op tasks; configurations alternate, each
              stack started afresh
    viewers   the dashboard in, one stack: a 10,000-task burst with nobody viewing,
              then with 20 viewers signed in with their event streams open
              (GET /ui/events; in a process of their own, as browsers would be),
              then again while a prober fetches pages: each burst's throughput and
              the service's CPU per task,
              the time for every viewer to hear of every task, and the response
              time of pages (/ui/tasks, /ui/endpoints) fetched during the burst
              against the same pages with nothing running

    python benchmarks/bench_dashboard.py [--rounds 3] [--tp-n 10000] [--lat-n 300]

Writes benchmarks/results/dashboard-<stamp>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from bench_funcx import measure, noop, percentile  # noqa: E402

from funcx_flows.localstack import LocalStack  # noqa: E402
from funcx_flows.sdk.executor import Executor  # noqa: E402

VIEWERS = 20
TICKS = os.sysconf("SC_CLK_TCK")
PAGES = ("/ui/tasks", "/ui/endpoints")


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextmanager
def stack(dashboard: bool) -> Iterator[tuple[LocalStack, str]]:
    with tempfile.TemporaryDirectory(prefix="funcx-dash-") as tmp:
        s = LocalStack(Path(tmp) / "home",
                       env={"FUNCX_FLOWS_DASHBOARD": "true" if dashboard else "false"})
        try:
            s.start_service()
            ep = s.start_endpoint("ep", {"max_workers_per_node": 2})
            yield s, ep.endpoint_id
        finally:
            s.stop()


def path_run(dashboard: bool, lat_n: int, tp_n: int) -> dict[str, float]:
    with stack(dashboard) as (s, eid), s.client() as client, \
            Executor(endpoint_id=eid, client=client) as ex:
        for i in range(100):  # warm-up
            ex.submit(abs, -i).result()
        return measure(ex, argparse.Namespace(only="lat,tp", lat_n=lat_n, tp_n=tp_n))


class Viewer(threading.Thread):
    """One signed-in browser's event stream: counts the task events it hears."""

    def __init__(self, url: str, cookie: str, expect: int) -> None:
        super().__init__(daemon=True)
        self.url, self.cookie, self.expect = url, cookie, expect
        self.heard = 0
        self.open = threading.Event()
        self.done_at = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", self.url + "/ui/events",
                          headers={"cookie": f"fxf_session={self.cookie}"},
                          timeout=httpx.Timeout(600, connect=30)) as r:
            self.open.set()
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "tasks":
                    self.heard += len(json.loads(line[6:]))
                    if self.heard >= self.expect:
                        self.done_at = time.perf_counter()
                        self.done.set()
                        return


def page_times(url: str, cookie: str, stop: threading.Event | None, n: int = 0
               ) -> list[float]:
    """Response times of the pages, fetched in turn until ``stop`` (or ``n`` times)."""
    out: list[float] = []
    with httpx.Client(base_url=url, headers={"cookie": f"fxf_session={cookie}"},
                      timeout=120) as http:
        i = 0
        while (stop is not None and not stop.is_set()) or (stop is None and i < n):
            t0 = time.perf_counter()
            assert http.get(PAGES[i % len(PAGES)]).status_code == 200
            out.append(time.perf_counter() - t0)
            i += 1
    return out


def watch(url: str, cookie: str, expect: int, probe: bool, conn: Any) -> None:
    """In a process of its own (browsers are not in the client's process): the
    viewers and, with ``probe``, the page prober; says "ready" once the streams
    are open, then sends what they measured when every viewer heard every task."""
    viewers = [Viewer(url, cookie, expect) for _ in range(VIEWERS)]
    for v in viewers:
        v.start()
    for v in viewers:
        v.open.wait(60)
    time.sleep(0.5)  # the subscriptions are made after the response starts
    stop = threading.Event()
    busy: list[float] = []
    prober = threading.Thread(target=lambda: busy.extend(page_times(url, cookie, stop)))
    if probe:
        prober.start()
    conn.send("ready")
    for v in viewers:
        v.done.wait(300)
    stop.set()
    if probe:
        prober.join()
    conn.send({"done_at": [v.done_at if v.done.is_set() else None for v in viewers],
               "heard_min": min(v.heard for v in viewers), "busy": busy})


def burst(ex: Executor, n: int, pid: int) -> tuple[float, float]:
    """``n`` no-op tasks: (seconds, service CPU seconds)."""
    c0, t0 = cpu_s(pid), time.perf_counter()  # CLOCK_MONOTONIC: a child's clock too
    futures = [ex.submit(noop, i) for i in range(n)]
    [f.result() for f in futures]
    return time.perf_counter() - t0, cpu_s(pid) - c0


def viewed_burst(ex: Executor, url: str, cookie: str, n: int, pid: int, probe: bool
                 ) -> dict[str, Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=watch, args=(url, cookie, n, probe, there))
    child.start()
    try:
        assert here.poll(120) and here.recv() == "ready"
        c0, t0 = cpu_s(pid), time.perf_counter()
        futures = [ex.submit(noop, i) for i in range(n)]
        [f.result() for f in futures]
        took = time.perf_counter() - t0
        assert here.poll(600)
        got: dict[str, Any] = here.recv()
        got["cpu_s"] = cpu_s(pid) - c0  # until every viewer heard every task
    finally:
        child.join(60)
    done = got["done_at"]
    got["all_heard_s"] = max(done) - t0 if all(d is not None for d in done) else math.nan
    got["burst_s"] = took
    return got


def viewers_run(tp_n: int) -> dict[str, float]:
    with stack(True) as (s, eid), s.client() as client, \
            Executor(endpoint_id=eid, client=client) as ex:
        for i in range(100):
            ex.submit(abs, -i).result()
        token = (s.home / "token").read_text().strip()
        url = client.service_url
        login = httpx.post(url + "/ui/login", data={"token": token, "next": "/ui/tasks"})
        found = re.search(r"fxf_session=([^;]+)", login.headers["set-cookie"])
        assert found
        cookie = found.group(1)
        pid = s.service_proc.pid if s.service_proc else 0
        quiet = page_times(url, cookie, None, n=40)
        alone_s, alone_cpu = burst(ex, tp_n, pid)  # the same burst, nobody viewing
        viewed = viewed_burst(ex, url, cookie, tp_n, pid, probe=False)
        probed = viewed_burst(ex, url, cookie, tp_n, pid, probe=True)
        busy = probed["busy"]
        per_task = 1e6 / tp_n
        return {"viewers": VIEWERS,
                "alone_tasks_per_s": tp_n / alone_s,
                "viewed_tasks_per_s": tp_n / viewed["burst_s"],
                "probed_tasks_per_s": tp_n / probed["burst_s"],
                "service_cpu_us_per_task_alone": alone_cpu * per_task,
                "service_cpu_us_per_task_viewed": viewed["cpu_s"] * per_task,
                "service_cpu_us_per_task_probed": probed["cpu_s"] * per_task,
                "all_heard_after_burst_s": viewed["all_heard_s"] - viewed["burst_s"],
                "events_heard_min": min(viewed["heard_min"], probed["heard_min"]),
                "page_quiet_median_ms": statistics.median(quiet) * 1e3,
                "page_quiet_p95_ms": percentile(quiet, 95) * 1e3,
                "page_busy_median_ms": statistics.median(busy) * 1e3,
                "page_busy_p95_ms": percentile(busy, 95) * 1e3,
                "page_busy_max_ms": max(busy) * 1e3, "page_busy_n": len(busy)}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    runs = result["path"]
    for ax, key, label in ((axes[0], "lat_median_us", "no-op latency, median (us)"),
                           (axes[1], "tp_tasks_per_s", "10,000 no-op tasks (tasks/s)")):
        for x, name in enumerate(("off", "on")):
            values = [r[key] for r in runs[name]]
            ax.bar(x, statistics.median(values), color="#90caf9" if x == 0 else "#1565c0")
            ax.scatter([x] * len(values), values, color="k", s=10, zorder=3)
        ax.set_xticks([0, 1], ["dashboard out", "dashboard in,\nno viewers"])
        ax.set_title(label)
    v = result["viewers"]
    axes[2].bar([0, 1], [v["page_quiet_median_ms"], v["page_busy_median_ms"]],
                color=["#a5d6a7", "#2e7d32"])
    axes[2].errorbar([0, 1], [v["page_quiet_median_ms"], v["page_busy_median_ms"]],
                     yerr=[[0, 0], [v["page_quiet_p95_ms"] - v["page_quiet_median_ms"],
                                    v["page_busy_p95_ms"] - v["page_busy_median_ms"]]],
                     fmt="none", color="k", capsize=4)
    axes[2].set_xticks([0, 1], ["page, idle", f"page, {VIEWERS} viewers\n+ 10,000-task burst"])
    axes[2].set_title("page response, ms (median, line to p95)")
    cpu = [v["service_cpu_us_per_task_alone"], v["service_cpu_us_per_task_viewed"],
           v["service_cpu_us_per_task_probed"]]
    axes[3].bar([0, 1, 2], cpu, color=["#b0bec5", "#546e7a", "#263238"])
    axes[3].set_xticks([0, 1, 2], ["nobody viewing", f"{VIEWERS} viewers",
                                   f"{VIEWERS} viewers\n+ page fetches"])
    axes[3].set_title("service CPU per task in a burst (us)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tp-n", type=int, default=10_000)
    ap.add_argument("--lat-n", type=int, default=300)
    a = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for r in range(a.rounds):
        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        for name in order:
            got = path_run(name == "on", a.lat_n, a.tp_n)
            runs[name].append(got)
            print(name, json.dumps({k: round(v, 1) for k, v in got.items()}), flush=True)
    viewers = viewers_run(a.tp_n)
    print("viewers", json.dumps({k: round(v, 2) for k, v in viewers.items()}), flush=True)
    summary = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for name, rs in runs.items() if rs}
    result: dict[str, Any] = {"args": vars(a), "path": runs, "path_median": summary,
                              "viewers": viewers}
    if summary:
        result["tp_ratio_on_off"] = (summary["on"]["tp_tasks_per_s"] /
                                     summary["off"]["tp_tasks_per_s"])
        result["lat_ratio_on_off"] = (summary["on"]["lat_median_us"] /
                                      summary["off"]["lat_median_us"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"dashboard-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k.endswith("_on_off")}))
    print(f"wrote {out} and {out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
