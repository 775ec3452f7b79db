"""The Globus transfer trigger: from a transfer's completion to its target starting.

A real GlobusTransferTrigger (real globus-sdk TransferClient, state in SQLite)
polls the Transfer stand-in of the tests (tests/globus_standin.py: 1,000 tasks
per listing, one-second time filters), which stores each task's true completion
instant. The target is an in-process callable that notes when it started. Two
phases, one after the other, on one trigger:

- steady: ``--rate`` transfers a second for ``--seconds``;
- burst: ``--burst`` (1,200) transfers completing in one second (requested over
  the ten minutes before), while the steady load goes on.

Each transfer has a file list under the watched path (one request each, as in
production). Delay = target start - completion instant.

    python benchmarks/bench_globus_trigger.py --poll 2 --rate 10 --seconds 60 \
        [--plot benchmarks/results/globus_trigger.png]

Prints ONE JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import globus_sdk  # noqa: E402
from globus_standin import TransferStandIn  # noqa: E402

from funcx_flows.triggers.config import GlobusTriggerConfig, TargetConfig  # noqa: E402
from funcx_flows.triggers.globus import GlobusTransferTrigger  # noqa: E402
from funcx_flows.triggers.serve import Running, wait_until  # noqa: E402
from funcx_flows.triggers.state import StateStore  # noqa: E402

BURST = 1200


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary(delays: list[float]) -> dict[str, float]:
    if not delays:
        return {"n": 0}
    return {"n": len(delays), "min_s": round(min(delays), 3),
            "median_s": round(statistics.median(delays), 3),
            "p99_s": round(percentile(delays, 99), 3), "max_s": round(max(delays), 3)}


class Feeder(threading.Thread):
    """Transfers completing at a steady rate until stopped."""

    def __init__(self, standin: TransferStandIn, rate: float, tag: str) -> None:
        super().__init__(daemon=True, name="feeder")
        self.standin, self.rate, self.tag = standin, rate, tag
        self.ids: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.time()
        while not self.stop.is_set():
            due = start + len(self.ids) / self.rate
            if self.stop.wait(max(0.0, due - time.time())):
                return
            n = len(self.ids)
            self.ids.append(self.standin.add(label=self.tag, files=[f"/data/s{n}.h5"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--poll", type=float, default=2.0, help="poll_interval_s")
    ap.add_argument("--rate", type=float, default=10.0, help="steady transfers per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="steady phase length")
    ap.add_argument("--in-flight", type=int, default=4, help="max_in_flight")
    ap.add_argument("--burst", type=int, default=BURST, help="transfers in the burst second")
    ap.add_argument("--wait", type=float, default=600.0,
                    help="how long to wait for the burst's runs to start")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    starts: dict[str, float] = {}
    lock = threading.Lock()

    def target(task_id: str, files: list[str]) -> None:
        now = time.time()
        with lock:
            starts.setdefault(task_id, now)

    with tempfile.TemporaryDirectory() as tmp, TransferStandIn() as standin:
        store = StateStore(Path(tmp) / "state.db")
        config = GlobusTriggerConfig(
            name="bench", poll_interval_s=args.poll, overlap_s=300, path_prefix="/data/",
            max_in_flight=args.in_flight, target=TargetConfig(flow="unused:f"))
        client = globus_sdk.TransferClient(base_url=standin.url)
        trig = GlobusTransferTrigger(config, store, client, call=target)
        with Running(trig):
            time.sleep(1.1)  # transfers complete after the trigger's first start
            feeder = Feeder(standin, args.rate, "steady")
            feeder.start()
            say(f"steady: {args.rate}/s for {args.seconds:.0f}s, poll every {args.poll}s")
            time.sleep(args.seconds)
            steady = list(feeder.ids)
            time.sleep(1.0 - time.time() % 1.0 + 0.02)  # the start of a second
            t0 = time.time()
            burst = [standin.add(requested=t0 - 600 + i / 2, label="burst",
                                 files=[f"/data/b{i}.h5"]) for i in range(args.burst)]
            added = time.time()
            say(f"burst: {args.burst} transfers added in {added - t0:.3f}s "
                f"(same second: {int(t0) == int(added)})")
            ok = wait_until(lambda: all(b in starts for b in burst), args.wait)
            feeder.stop.set()
            feeder.join()
            ok = ok and wait_until(lambda: all(s in starts for s in feeder.ids), args.wait)
        polls = sum(1 for k, _ in standin.stats.requests if k == "task_list")
        files = standin.stats.count("files")
        queued = {r.context["task_id"]: r.created_at
                  for r in store.runs("bench", limit=10**6)}
        store.close()
        completed = {t.task_id: t.completed or 0.0 for t in standin.tasks.values()}

    def delays(ids: list[str]) -> list[float]:
        return [starts[i] - completed[i] for i in ids if i in starts]

    def found(ids: list[str]) -> dict[str, float]:
        """Completion -> run queued: the poll's cadence, the listing, the file list."""
        return summary([queued[i] - completed[i] for i in ids if i in queued])

    burst_delays = delays(burst)
    during = feeder.ids[len(steady):]
    out: dict[str, Any] = {
        "poll_interval_s": args.poll, "rate_per_s": args.rate, "max_in_flight": args.in_flight,
        "all_started": ok, "fired_once": len(starts) == len(feeder.ids) + args.burst,
        "steady": summary(delays(steady)), "steady_queued": found(steady),
        "burst": {**summary(burst_delays), "started": len(burst_delays),
                  "last_started_after_s": round(max(starts[b] for b in burst if b in starts)
                                                - t0, 3)},
        "burst_queued": found(burst),
        "steady_during_burst": summary(delays(during)) if during else {},
        "task_list_requests": polls, "file_list_requests": files,
        "target_median_below_2x_poll": statistics.median(delays(steady)) < 2 * args.poll,
    }
    print(json.dumps(out))
    if args.plot:
        plot(args.plot, completed, starts, steady, burst, during, args.poll)


def plot(path: Path, completed: dict[str, float], starts: dict[str, float], steady: list[str],
         burst: list[str], during: list[str], poll: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(completed[i] for i in steady)
    fig, ax = plt.subplots(figsize=(9, 4))
    for ids, label, mark in ((steady, "steady", "."), (during, "steady, during the burst", "."),
                             (burst, "burst (1,200 in one second)", "x")):
        xs = [completed[i] - t0 for i in ids if i in starts]
        ys = [starts[i] - completed[i] for i in ids if i in starts]
        ax.scatter(xs, ys, s=6, marker=mark, label=label)
    ax.axhline(2 * poll, color="grey", linestyle="--", label="2 x poll interval")
    ax.set_xlabel("completion time (s)")
    ax.set_ylabel("completion -> target start (s)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    say(f"plot: {path}")


if __name__ == "__main__":
    main()
