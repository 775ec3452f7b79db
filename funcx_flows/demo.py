"""``funcx-flows demo``: the whole path on the embedded default, end to end.

Starts a service (SQLite) and a local endpoint in a temporary home, registers a
few analysis functions, runs a batch of tasks through client -> service ->
endpoint -> worker -> back with a progress bar, prints a summary, and stops
every process it started.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor


def frame_statistics(frame_id: int, size: int = 256) -> dict[str, float]:
    """A stand-in detector analysis: statistics of a synthetic frame."""
    import math as _m

    values = [(_m.sin(frame_id * 0.1 + i * 0.01) + 1.0) * 100.0 for i in range(size)]
    mean = sum(values) / size
    var = sum((v - mean) ** 2 for v in values) / size
    return {"frame": float(frame_id), "mean": mean, "std": _m.sqrt(var), "max": max(values)}


def noop() -> None:
    return None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[k]


def run_demo(tasks: int = 1000, workers: int = 2, frames: int = 40, batch: int = 10,
             home: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="funcx-flows-demo-") as tmp:
        stack = LocalStack(home or Path(tmp) / "home")
        try:
            summary = _run(stack, tasks, workers, console)
            if frames:
                from funcx_flows.demo_beamline import run_beamline

                summary.update(run_beamline(stack, Path(tmp), frames, batch, console))
            return summary
        finally:
            with console.status("stopping the endpoint and the service"):
                stack.stop()
            console.print("[green]stopped every process the demo started[/]")


def _run(stack: LocalStack, tasks: int, workers: int, console: Console) -> dict[str, Any]:
    t0 = time.perf_counter()
    with console.status("starting the service (SQLite, temporary home)"):
        url = stack.start_service()
    console.print(f"service up at [bold]{url}[/] in {time.perf_counter() - t0:.1f}s")
    t1 = time.perf_counter()
    with console.status("starting a local endpoint"):
        ep = stack.start_endpoint("demo", {"max_workers_per_node": workers})
    console.print(f"endpoint [bold]demo[/] ({ep.endpoint_id}) online with {workers} workers "
                  f"in {time.perf_counter() - t1:.1f}s")

    client = stack.client()
    summary: dict[str, Any] = {"tasks": tasks, "workers": workers}
    with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
        # Sequential round trips: the latency a single remote call costs.
        ex.submit(noop).result(timeout=60)
        latencies = []
        for _ in range(100):
            s = time.perf_counter()
            ex.submit(noop).result(timeout=60)
            latencies.append(time.perf_counter() - s)
        summary["latency_median_ms"] = statistics.median(latencies) * 1e3
        summary["latency_p99_ms"] = percentile(latencies, 99) * 1e3

        # A batch of analysis tasks through the full path, with progress.
        progress = Progress(TextColumn("[bold]analysing frames"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console)
        results: list[dict[str, float]] = []
        failures = 0
        with progress:
            bar = progress.add_task("frames", total=tasks)
            s = time.perf_counter()
            futures = [ex.submit(frame_statistics, i) for i in range(tasks)]
            for f in as_completed(futures, timeout=600):
                if f.exception() is None:
                    results.append(f.result())
                else:
                    failures += 1
                progress.advance(bar)
            elapsed = time.perf_counter() - s
    client.close()
    summary.update(
        succeeded=len(results),
        failed=failures,
        elapsed_s=elapsed,
        throughput_per_s=tasks / elapsed,
        mean_intensity=statistics.fmean(r["mean"] for r in results) if results else float("nan"),
    )
    _print_summary(console, summary)
    return summary


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    table = Table(title="funcx-flows demo: client -> service -> endpoint -> worker -> back")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tasks run", f"{s['tasks']}")
    table.add_row("succeeded / failed", f"{s['succeeded']} / {s['failed']}")
    table.add_row("workers", f"{s['workers']}")
    table.add_row("no-op latency, median", f"{s['latency_median_ms']:.2f} ms")
    table.add_row("no-op latency, p99", f"{s['latency_p99_ms']:.2f} ms")
    table.add_row("batch wall time", f"{s['elapsed_s']:.2f} s")
    table.add_row("throughput", f"{s['throughput_per_s']:.0f} tasks/s")
    table.add_row("mean frame intensity", f"{s['mean_intensity']:.3f}")
    console.print(table)
