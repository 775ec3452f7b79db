"""Service replicas on one PostgreSQL (issue 17), in one invocation:

    single       one service process as before replicas (no --cluster), client direct
    cluster-1    one replica with --cluster, client direct (the single-replica path)
    proxy-1/2/3  1, 2, 3 replicas behind HAProxy (deploy/haproxy.cfg, TLS), client
                 and endpoint link through the proxy

each on bench_funcx.py's workloads: no-op latency (sequential) and 10,000 no-op
tasks. Two cores cannot show scaling: for each run the CPU the replicas spent
(utime + stime from /proc) per task, per replica and in all, and PostgreSQL's
(every process of the postgres user) per task. Configurations run in order, then
in reverse order (drift cancels out); each stack is started afresh.

    python benchmarks/bench_replicas.py [--passes 2] [--tp-n 10000] [--lat-n 300]

Needs FUNCX_FLOWS_TEST_POSTGRES_URL (its schema is dropped) and haproxy. Writes
benchmarks/results/replicas-<stamp>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests")]

from bench_funcx import measure  # noqa: E402
from replicastack import PG_URL, running_cluster  # noqa: E402

from funcx_flows.sdk.executor import Executor  # noqa: E402

CONFIGS = {  # name: (replicas, cluster, through the proxy)
    "single": (1, False, False),
    "cluster-1": (1, True, False),
    "proxy-1": (1, True, True),
    "proxy-2": (2, True, True),
    "proxy-3": (3, True, True),
}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def postgres_cpu_s() -> float:
    uid = pwd.getpwnam("postgres").pw_uid
    total = 0.0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid == uid:
                    total += cpu_s(int(p.name))
            except (OSError, ValueError, IndexError):
                continue
    return total


def run_config(name: str, lat_n: int, tp_n: int) -> dict[str, Any]:
    replicas, cluster, proxied = CONFIGS[name]
    with tempfile.TemporaryDirectory(prefix="funcx-replicas-") as tmp, \
            running_cluster(Path(tmp), replicas=replicas, cluster=cluster) as c:
        eid = c.stack.endpoints["ep"].endpoint_id
        with c.client(None if proxied else 0) as client, \
                Executor(endpoint_id=eid, client=client) as ex:
            for i in range(100):  # warm-up
                ex.submit(abs, -i).result()
            args = argparse.Namespace(only="lat", lat_n=lat_n, tp_n=tp_n)
            got: dict[str, Any] = measure(ex, args)
            pids = [r.proc.pid for r in c.replicas if r.proc is not None]
            before = [cpu_s(p) for p in pids]
            pg_before = postgres_cpu_s()
            got.update(measure(ex, argparse.Namespace(only="tp", lat_n=lat_n, tp_n=tp_n)))
            per = [(cpu_s(p) - b) / tp_n * 1e6 for p, b in zip(pids, before, strict=True)]
            got["replica_cpu_us_per_task"] = per
            got["replicas_cpu_us_per_task"] = sum(per)
            got["postgres_cpu_us_per_task"] = (postgres_cpu_s() - pg_before) / tp_n * 1e6
    return got


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [("tp_tasks_per_s", "10,000 no-op tasks: tasks/s"),
              ("lat_median_us", "no-op latency median (us)"),
              ("replicas_cpu_us_per_task", "CPU per task (us): replicas, PostgreSQL")]
    for ax, (key, title) in zip(axes, panels, strict=True):
        meds = [statistics.median(r[key] for r in results[n]) for n in names]
        ax.bar(range(len(names)), meds, color="tab:blue", label="replicas")
        if key == "replicas_cpu_us_per_task":
            pg = [statistics.median(r["postgres_cpu_us_per_task"] for r in results[n])
                  for n in names]
            ax.bar(range(len(names)), pg, bottom=meds, color="tab:orange", label="PostgreSQL")
            ax.legend()
        for x, n in enumerate(names):
            ax.scatter([x] * len(results[n]), [r[key] for r in results[n]], color="k", s=8,
                       zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--tp-n", type=int, default=10_000)
    ap.add_argument("--lat-n", type=int, default=300)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    a = ap.parse_args()
    if not PG_URL:
        sys.exit("set FUNCX_FLOWS_TEST_POSTGRES_URL (its schema is dropped)")
    names = a.configs.split(",")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for p in range(a.passes):
        for name in names if p % 2 == 0 else names[::-1]:
            got = run_config(name, a.lat_n, a.tp_n)
            results[name].append(got)
            print(f"pass {p} {name}: " + json.dumps(
                {k: (round(v, 1) if isinstance(v, float) else [round(x, 1) for x in v])
                 for k, v in got.items()}), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"replicas-{stamp}.json"
    out.write_text(json.dumps({"load": os.getloadavg(), "tp_n": a.tp_n, "lat_n": a.lat_n,
                               "results": results}, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
