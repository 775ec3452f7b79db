"""Flow runs per second from a burst of files: a real file trigger starting a no-op
Prefect flow in process, as `funcx-flows trigger run` does (on demand, not in CI).

    python benchmarks/bench_trigger_flows.py                      # temporary Prefect API
    python benchmarks/bench_trigger_flows.py --in-flight 1,4,8 --batch 1,10 --heartbeats off,on
    PREFECT_API_URL=http://127.0.0.1:4200/api python benchmarks/bench_trigger_flows.py

For each setting (max_in_flight x batch_size x Prefect heartbeats) a fresh folder
and state database get ``--files`` files written at once; the clock runs from the
first write until the trigger has recorded every run done. Reported: flow runs
and files per second, and the CPU that this process (the trigger and its flow
runs) and the Prefect server (when it is a child of this process) spent per flow
run: where the time goes once the heartbeat wait is gone. A JSON line per setting
goes to stdout, a Markdown table to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def server_process(pid: int) -> psutil.Process | None:
    """The Prefect API server: ``pid``, or the temporary one this process started."""
    if pid:
        return psutil.Process(pid)
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "funcx_flows.prefect.api_process" in " ".join(child.cmdline()):
                return child
    return None


def cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def one(tmp: Path, flow: Any, files: int, in_flight: int, batch: int,
        heartbeats: bool, target: str, server: psutil.Process | None) -> dict[str, Any]:
    from funcx_flows.triggers.config import FileTriggerConfig, TargetConfig
    from funcx_flows.triggers.filewatch import FileTrigger
    from funcx_flows.triggers.serve import Running, wait_until
    from funcx_flows.triggers.state import StateStore

    folder = tmp / "incoming"
    folder.mkdir(parents=True)
    store = StateStore(tmp / "state.db")
    # A burst is batched by count (a window would only add its wait to the clock).
    config = FileTriggerConfig(
        name="bench", paths=[str(folder)], settle_s=5.0, max_in_flight=in_flight,
        batch_size=batch, batch_window_s=0.0 if batch == 1 else 0.5,
        target=TargetConfig(kind=target, flow="bench_trigger_flows:noop",
                            deployment="bench-noop/bench", parameters={"paths": "{paths}"},
                            prefect_heartbeats=heartbeats))
    expected = -(-files // batch)
    me = psutil.Process()
    try:
        with Running(FileTrigger(config, store, call=flow)):
            cpu0, srv0 = cpu(me), cpu(server)
            t0 = time.perf_counter()
            for i in range(files):
                (folder / f"f{i:05d}.dat").write_bytes(b"x")
            if not wait_until(lambda: store.counts().get("bench", {}).get("done", 0) >= expected,
                              1800):
                raise RuntimeError(f"only {store.counts()} after 1800 s")
            elapsed = time.perf_counter() - t0
            cpu1, srv1 = cpu(me), cpu(server)
        counts = store.counts()["bench"]
        if counts != {"done": expected}:
            raise RuntimeError(f"runs {counts}, expected {expected} done")
    finally:
        store.close()
    return {"target": target, "files": files, "in_flight": in_flight, "batch": batch,
            "heartbeats": heartbeats, "flow_runs": expected, "seconds": round(elapsed, 2),
            "flow_runs_per_s": round(expected / elapsed, 1),
            "files_per_s": round(files / elapsed, 1),
            "trigger_cpu_ms_per_run": round((cpu1 - cpu0) / expected * 1000, 1),
            "server_cpu_ms_per_run": round((srv1 - srv0) / expected * 1000, 1)
            if server is not None else None}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200, help="files per burst")
    ap.add_argument("--in-flight", type=ints, default=[4, 8], help="max_in_flight values")
    ap.add_argument("--batch", type=ints, default=[1], help="batch_size values")
    ap.add_argument("--heartbeats", default="off", help="off, on or off,on")
    ap.add_argument("--target", choices=("flow", "deployment"), default="flow",
                    help="flow: in process (run to the end); deployment: flow runs created "
                         "through the API for a worker to run (none here: they stay Scheduled)")
    ap.add_argument("--server-pid", type=int, default=0,
                    help="pid of a Prefect server of your own, to count its CPU")
    args = ap.parse_args()
    beats = [h == "on" for h in args.heartbeats.split(",")]

    with tempfile.TemporaryDirectory(prefix="funcx-trigger-flows-") as tmp_name:
        tmp = Path(tmp_name)
        if not os.environ.get("PREFECT_API_URL"):  # a private home for the temporary API
            os.environ["PREFECT_HOME"] = str(tmp / "prefect")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        import prefect
        from prefect import flow

        from funcx_flows.prefect.server import prefect_api

        @flow(name="bench-noop", persist_result=False)
        def noop(paths: list[str]) -> int:
            return len(paths)

        rows = []
        with prefect_api() as url:
            say(f"Prefect {prefect.__version__}, API {url}, {psutil.cpu_count()} CPUs, "
                f"load {os.getloadavg()[0]:.1f}")
            if args.target == "deployment":
                noop.to_deployment(name="bench").apply()
            server = server_process(args.server_pid)
            for n, (in_flight, batch, hb) in enumerate(
                    itertools.product(args.in_flight, args.batch, beats)):
                row = one(tmp / f"run{n}", noop, args.files, in_flight, batch, hb, args.target,
                          server)
                row["prefect"] = prefect.__version__
                print(json.dumps(row), flush=True)
                rows.append(row)
        say("| target | max_in_flight | batch | heartbeats | flow runs | s | flow runs/s | files/s "
            "| trigger CPU ms/run | server CPU ms/run |")
        say("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            say(f"| {r['target']} | {r['in_flight']} | {r['batch']} "
                f"| {'on' if r['heartbeats'] else 'off'} "
                f"| {r['flow_runs']} | {r['seconds']} | {r['flow_runs_per_s']} "
                f"| {r['files_per_s']} | {r['trigger_cpu_ms_per_run']} "
                f"| {r['server_cpu_ms_per_run']} |")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
