"""funcx-flows on the Prefect and trigger paths, beside Prefect's own task runners.

One LocalStack (service + endpoint with 2 workers) and one temporary Prefect API
serve everything. Prefect path (paths_prefect.py): a flow mapping a no-op task
over N items and a flow chaining N dependent tasks, under the funcx-flows task
runner, Prefect's ThreadPoolTaskRunner and (``--process-pool``) its
ProcessPoolTaskRunner with 2 processes, interleaved (order rotated per rep).
Trigger path (paths_trigger.py): a real watchdog file trigger from a YAML config
starting a flow with one remote task per file; K files one at a time (latency
per stage), then a burst of B files (time to all done; none lost or doubled).

    python benchmarks/bench_paths.py --reps 3 [--plot paths.png]

Prints ONE JSON line on stdout; progress goes to stderr. Timings on a shared
2-core machine are indicative.
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
from pathlib import Path
from typing import Any


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prefect_path(args: argparse.Namespace) -> dict[str, Any]:
    import paths_prefect

    runners = paths_prefect.runners("bench", args.workers, args.process_pool)
    sizes = {"fan": args.fan_n, "chain": args.chain_n}
    for name, make in runners.items():  # first runs pay imports and process start-up
        for workload in sizes:
            paths_prefect.run_flow(workload, 5, make)
        say(f"warmed up {name}")
    walls: dict[str, dict[str, list[float]]] = {w: {r: [] for r in runners} for w in sizes}
    bodies: dict[str, dict[str, list[float]]] = {w: {r: [] for r in runners} for w in sizes}
    names = list(runners)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            for workload, n in sizes.items():
                wall, body = paths_prefect.run_flow(workload, n, runners[name])
                walls[workload][name].append(wall)
                bodies[workload][name].append(body)
                say(f"rep {rep} {workload}({n}) {name}: {wall:.2f} s "
                    f"({wall / n * 1000:.1f} ms/task; flow body {body:.2f} s)")
    out: dict[str, Any] = {}
    for workload, n in sizes.items():
        per: dict[str, Any] = {}
        for name, values in walls[workload].items():
            med = statistics.median(values)
            body_s = bodies[workload][name]
            per[name] = {"flow_wall_s": {"median": med, "all": values},
                         "per_task_ms": {"median": med / n * 1000,
                                         "all": [v / n * 1000 for v in values]},
                         "flow_body_s": {"median": statistics.median(body_s), "all": body_s},
                         "outside_body_s": statistics.median(
                             w - b for w, b in zip(values, body_s, strict=True))}
        base = walls[workload]["prefect-threads"]
        ratios = {name: [a / b for a, b in zip(values, base, strict=True)]
                  for name, values in walls[workload].items() if name != "prefect-threads"}
        out[workload] = {"n": n, "runners": per,
                         "ratio_vs_threads": {k: statistics.median(v) for k, v in ratios.items()}}
    return out


def trigger_path(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import paths_trigger

    say(f"trigger: {args.files} files one at a time")
    seq = paths_trigger.sequential(tmp / "seq", args.files)
    latency = {s: {"median_ms": statistics.median(v) * 1000,
                   "p95_ms": percentile(v, 95) * 1000} for s, v in seq.items()}
    for s, v in latency.items():
        say(f"  close -> {s}: median {v['median_ms']:.1f} ms, p95 {v['p95_ms']:.1f} ms")
    say(f"trigger: burst of {args.burst} files")
    b = paths_trigger.burst(tmp / "burst", args.burst, args.in_flight)
    stages = b.pop("stages")
    b["close_to_done_s"] = {"median": statistics.median(stages["done"]),
                            "max": max(stages["done"])}
    say(f"  {b['n']} files: all flow runs done in {b['all_done_s']:.1f} s "
        f"({b['files_per_s']:.1f} files/s), none lost or doubled")
    return {"sequential": {"k": args.files, "latency": latency,
                           "samples_ms": {s: [x * 1000 for x in v] for s, v in seq.items()}},
            "burst": b}


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, workload in zip(axes[:2], ("fan", "chain"), strict=True):
        data = result["prefect"][workload]
        names = list(data["runners"])
        meds = [data["runners"][r]["per_task_ms"]["median"] for r in names]
        ax.bar(names, meds, color=["tab:blue", "tab:orange", "tab:green"][: len(names)])
        for i, r in enumerate(names):
            pts = data["runners"][r]["per_task_ms"]["all"]
            ax.scatter([i] * len(pts), pts, color="black", s=10, zorder=3)
        ax.set_title(f"Prefect {workload} (N={data['n']}): flow wall / N")
        ax.set_ylabel("ms per task")
    seq = result["trigger"]["sequential"]
    stages = list(seq["samples_ms"])
    axes[2].boxplot([seq["samples_ms"][s] for s in stages], tick_labels=stages)
    axes[2].set_yscale("log")
    axes[2].set_title(f"file trigger: close -> stage (K={seq['k']})")
    axes[2].set_ylabel("ms after file close")
    fig.suptitle("funcx-flows vs Prefect task runners (indicative: shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fan-n", type=int, default=200)
    ap.add_argument("--chain-n", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--process-pool", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--in-flight", type=int, default=4, help="trigger max_in_flight (burst)")
    ap.add_argument("--only", default="prefect,trigger")
    ap.add_argument("--plot", default="")
    args = ap.parse_args()
    only = set(args.only.split(","))

    with tempfile.TemporaryDirectory(prefix="funcx-paths-") as tmp_name:
        tmp = Path(tmp_name)
        # Prefect reads its settings at import: a private home, quiet consoles.
        os.environ["PREFECT_HOME"] = str(tmp / "prefect")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        os.environ.pop("PREFECT_API_URL", None)
        from funcx_flows.localstack import LocalStack
        from funcx_flows.prefect._remote import registry
        from funcx_flows.prefect.server import prefect_api

        stack = LocalStack(tmp / "home")
        result: dict[str, Any] = {"system": "funcx-flows", "workers": args.workers}
        try:
            t0 = time.perf_counter()
            stack.start_service()
            stack.start_endpoint("bench", {"max_workers_per_node": args.workers})
            os.environ["FUNCX_FLOWS_HOME"] = str(stack.home)
            with prefect_api():
                result["startup_s"] = time.perf_counter() - t0
                say(f"service, endpoint and Prefect API up in {result['startup_s']:.1f} s")
                if "prefect" in only:
                    result["prefect"] = prefect_path(args)
                if "trigger" in only:
                    result["trigger"] = trigger_path(args, tmp)
        finally:
            registry.close()
            stack.stop()
    print(json.dumps(result))
    if args.plot and {"prefect", "trigger"} <= only:
        plot(result, args.plot)
        say(f"plot written to {args.plot}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
