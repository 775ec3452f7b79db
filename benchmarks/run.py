"""Side-by-side benchmark: funcx-flows and its peers, interleaved, in one invocation.

Each round runs every system once (order rotated per round) on the same no-op
workloads; ratios are taken within a round (same time window, same noise) and
their median is reported. Peers come from ../shared/bench/peers and run under
``--peer-python`` (a venv with parsl and dask; see docs/benchmarks.md).

    python benchmarks/run.py --rounds 3 --reps 1 [--systems funcx,ppe,parsl-direct]

Writes benchmarks/results/<stamp>.{json,md} and a PNG of latency and throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent.parent / "shared" / "bench" / "peers"
if not PEERS.exists():
    PEERS = Path(os.environ.get("FUNCX_PEERS_DIR", "/work/shared/bench/peers"))
DEFAULT_PEER_PY = "/var/tmp/funcx-peers-venv/bin/python"

SYSTEMS: dict[str, list[str]] = {
    "funcx": [str(HERE / "bench_funcx.py")],
    "ppe": [str(PEERS / "bench_ppe.py")],
    "parsl-direct": [str(PEERS / "bench_parsl.py"), "--mode", "direct"],
    "dask": [str(PEERS / "bench_dask.py")],
}
KEYS = ["lat_median_us", "lat_p99_us", "tp_tasks_per_s", "sleep_efficiency"]


def run_one(name: str, args: argparse.Namespace) -> dict[str, float]:
    py = sys.executable if name == "funcx" else args.peer_python
    cmd = [py, *SYSTEMS[name], "--reps", str(args.reps), "--only", args.only]
    print(f"  running {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                         cwd=str(PEERS if name != "funcx" else HERE))
    if out.returncode != 0:
        raise SystemExit(f"{name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    line = out.stdout.strip().splitlines()[-1]
    data = json.loads(line)
    metrics = data.get("metrics") or data.get("summary") or data
    flat: dict[str, float] = {}
    for k in KEYS:
        v = metrics.get(k)
        if isinstance(v, dict):
            v = v.get("median")
        if isinstance(v, (int, float)):
            flat[k] = float(v)
    print(f"  {name}: {flat} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    return flat


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    systems = list(rounds[0])
    med = {s: {k: statistics.median(r[s][k] for r in rounds if k in r[s])
               for k in KEYS if any(k in r[s] for r in rounds)} for s in systems}
    ratios: dict[str, dict[str, float]] = {}
    for peer in systems:
        if peer == "funcx":
            continue
        ratios[peer] = {}
        for k in KEYS:
            vals = [r["funcx"][k] / r[peer][k] for r in rounds
                    if k in r["funcx"] and k in r[peer] and r[peer][k]]
            if vals:
                ratios[peer][k] = statistics.median(vals)
    return {"medians": med, "funcx_over_peer": ratios, "rounds": rounds}


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| system | latency median (ms) | p99 (ms) | tasks/s | sleep efficiency |",
             "|---|---|---|---|---|"]
    for s, m in summary["medians"].items():
        lines.append(f"| {s} | {m.get('lat_median_us', float('nan')) / 1e3:.2f} | "
                     f"{m.get('lat_p99_us', float('nan')) / 1e3:.2f} | "
                     f"{m.get('tp_tasks_per_s', float('nan')):.0f} | "
                     f"{m.get('sleep_efficiency', float('nan')):.2f} |")
    lines += ["", "funcx-flows / peer, median of per-round ratios "
              "(latency: lower is better; tasks/s: higher is better):", "",
              "| peer | latency median | latency p99 | tasks/s | sleep efficiency |",
              "|---|---|---|---|---|"]
    for peer, r in summary["funcx_over_peer"].items():
        lines.append(f"| {peer} | {r.get('lat_median_us', float('nan')):.2f} | "
                     f"{r.get('lat_p99_us', float('nan')):.2f} | "
                     f"{r.get('tp_tasks_per_s', float('nan')):.2f} | "
                     f"{r.get('sleep_efficiency', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = summary["medians"]
    systems = list(med)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lat = [med[s].get("lat_median_us", 0) / 1e3 for s in systems]
    p99 = [med[s].get("lat_p99_us", 0) / 1e3 for s in systems]
    x = range(len(systems))
    axes[0].bar([i - 0.2 for i in x], lat, width=0.4, label="median")
    axes[0].bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    axes[0].set_xticks(list(x), systems)
    axes[0].set_ylabel("no-op round trip (ms)")
    axes[0].legend()
    axes[1].bar(systems, [med[s].get("tp_tasks_per_s", 0) for s in systems], color="tab:green")
    axes[1].set_ylabel("no-op tasks/s (10,000 at once)")
    fig.suptitle("funcx-flows beside its peers (same run, 2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--only", default="lat,tp,sleep")
    ap.add_argument("--systems", default="funcx,ppe,parsl-direct")
    ap.add_argument("--peer-python", default=os.environ.get("PEER_BENCH_PYTHON", DEFAULT_PEER_PY))
    args = ap.parse_args()
    systems = args.systems.split(",")
    rounds = []
    for n in range(args.rounds):
        order = systems[n % len(systems):] + systems[:n % len(systems)]
        print(f"round {n + 1}/{args.rounds}: {order}", file=sys.stderr, flush=True)
        rounds.append({s: run_one(s, args) for s in order})
    summary = summarize(rounds)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    (out / f"{stamp}.json").write_text(json.dumps(summary, indent=2))
    md = markdown(summary)
    (out / f"{stamp}.md").write_text(md)
    try:
        plot(summary, out / f"{stamp}.png")
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print(md)
    print(json.dumps({"medians": summary["medians"], "ratios": summary["funcx_over_peer"]}))


if __name__ == "__main__":
    main()
