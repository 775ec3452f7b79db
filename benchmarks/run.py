"""Side-by-side benchmark: funcx-flows and its peers, interleaved, in one invocation.

Each round runs every system once (order rotated per round) on the same workloads:
the no-op ones of the peers' harness and the payload one of ``payload.py``. Ratios
are taken within a round (same time window, same noise) and their median is
reported. Peers come from ../shared/bench/peers and run under ``--peer-python``
(a Python with parsl and dask; see docs/benchmarks.md).

    python benchmarks/run.py --rounds 3 --reps 1
                             [--systems funcx,funcx-inline,ppe,parsl-direct,dask]
                             [--only lat,tp,sleep,pay] [--peer-python python]
                             [--before PYTHON]

``--before``: a Python whose funcx-flows is an older checkout (its own venv with
``pip install --no-deps -e OLD``); funcx and funcx-inline then also run on it, as
``funcx@before`` and ``funcx-inline@before``, in the same rounds, and the report
adds this checkout's ratios to the older one's (a change's cost, measured in one
run).

Writes benchmarks/results/<stamp>.{json,md} and a PNG (see ``report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from report import BEFORE, KEYS, markdown, ours, plot, plot_before_after, summarize

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent.parent / "shared" / "bench" / "peers"
if not PEERS.exists():
    PEERS = Path(os.environ.get("FUNCX_PEERS_DIR", "/work/shared/bench/peers"))
DEFAULT_PEER_PY = os.environ.get("PEER_BENCH_PYTHON", "/var/tmp/funcx-peers-venv/bin/python")
if not Path(DEFAULT_PEER_PY).exists():
    DEFAULT_PEER_PY = sys.executable

# The harness's no-op workloads (lat, tp, sleep), and the payload workload (pay) of
# payload.py, which bench_funcx.py runs itself and bench_peers_payload.py for a peer.
SYSTEMS: dict[str, list[str]] = {
    "funcx": [str(HERE / "bench_funcx.py")],
    "funcx-inline": [str(HERE / "bench_funcx.py"), "--provider", "inline"],
    "ppe": [str(PEERS / "bench_ppe.py")],
    "parsl-direct": [str(PEERS / "bench_parsl.py"), "--mode", "direct"],
    "dask": [str(PEERS / "bench_dask.py")],
}
PAYLOAD_PEERS = {"ppe": "ppe", "parsl-direct": "parsl", "dask": "dask"}
NOOP = {"lat", "tp", "sleep"}


def _run(name: str, cmd: list[str], cwd: Path) -> dict[str, float]:
    """One benchmark process; its last stdout line is JSON with per-metric medians."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=str(cwd))
    if out.returncode != 0:
        raise SystemExit(f"{name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    metrics = data.get("metrics") or data.get("summary") or data
    flat: dict[str, float] = {}
    for k in KEYS:
        v = metrics.get(k)
        if isinstance(v, dict):
            v = v.get("median")
        if isinstance(v, (int, float)):
            flat[k] = float(v)
    peak = (data.get("rss") or {}).get("peak_total_tree_pss_mb")
    if isinstance(peak, (int, float)):  # the whole tree during the no-op workloads
        flat["peak_pss_mib"] = float(peak)
    print(f"  {name}: {json.dumps({k: round(v, 2) for k, v in flat.items()})} "
          f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    return flat


def run_one(name: str, args: argparse.Namespace) -> dict[str, float]:
    only = set(args.only.split(","))
    common = ["--reps", str(args.reps)]
    pay = ["--pay-scale", str(args.pay_scale)]
    flat: dict[str, float] = {}
    if ours(name):  # like the peers: no-op workloads and payloads in two processes
        python, script = ((args.before, SYSTEMS[name.removesuffix(BEFORE)])
                          if name.endswith(BEFORE) else (sys.executable, SYSTEMS[name]))
        if only & NOOP:
            flat |= _run(name, [python, *script, *common,
                                "--only", ",".join(sorted(only & NOOP))], HERE)
        if "pay" in only:
            paid = _run(f"{name} payload", [python, *script, *common,
                                            "--only", "pay", *pay], HERE)
            paid.pop("peak_pss_mib", None)  # memory is compared on the no-op workloads
            flat |= paid
        return flat
    if only & NOOP:
        flat |= _run(name, [args.peer_python, *SYSTEMS[name], *common,
                            "--only", ",".join(sorted(only & NOOP))], PEERS)
    if "pay" in only:
        flat |= _run(f"{name} payload", [args.peer_python, str(HERE / "bench_peers_payload.py"),
                                         "--system", PAYLOAD_PEERS[name], *common, *pay], HERE)
    return flat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--only", default="lat,tp,sleep,pay",
                    help="workloads: lat,tp,sleep (no-op tasks) and pay (1 MB and 10 MB echoed)")
    ap.add_argument("--systems", default="funcx,funcx-inline,ppe,parsl-direct,dask")
    ap.add_argument("--pay-scale", type=float, default=1.0,
                    help="multiplies the payload workload's call counts")
    ap.add_argument("--peer-python", default=DEFAULT_PEER_PY)
    ap.add_argument("--before", default="",
                    help="a Python whose funcx-flows is an older checkout: funcx systems "
                         "also run on it, and the report gives this one's ratios to it")
    args = ap.parse_args()
    systems = args.systems.split(",")
    if args.before:
        systems += [s + BEFORE for s in systems if ours(s)]
    rounds = []
    for n in range(args.rounds):
        order = systems[n % len(systems):] + systems[:n % len(systems)]
        print(f"round {n + 1}/{args.rounds}: {order}", file=sys.stderr, flush=True)
        rounds.append({s: run_one(s, args) for s in order})
    summary = summarize(rounds)
    summary["pay_scale"] = args.pay_scale
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    (out / f"{stamp}.json").write_text(json.dumps(summary, indent=2))
    md = markdown(summary)
    (out / f"{stamp}.md").write_text(md)
    try:
        plot(summary, out / f"{stamp}.png")
        if args.before:
            plot_before_after(rounds, out / f"{stamp}_before_after.png")
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print(md)
    print(json.dumps({"medians": summary["medians"], "ratios": summary["ratios"]}))


if __name__ == "__main__":
    main()
