"""The second act of ``funcx-flows demo``: a simulated detector writes frames, the
file trigger starts the beamline flow (flows_examples/beamline.py) per batch, the
flow reconstructs each frame on the endpoint and publishes a summary."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from funcx_flows.errors import ConfigError
from funcx_flows.localstack import LocalStack

EXAMPLE = Path(__file__).resolve().parents[1] / "flows_examples" / "beamline.py"


def _load_beamline() -> ModuleType:
    if not EXAMPLE.exists():
        raise ConfigError(f"the beamline example is not at {EXAMPLE}; run the demo from a "
                          "checkout (pip install -e .) or pass --frames 0")
    spec = importlib.util.spec_from_file_location("funcx_flows_demo_beamline", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _instrument(folder: Path, frames: int, stop: threading.Event) -> None:
    """Writes frames the way detectors do: in chunks, a little at a time."""
    rng = random.Random(7)
    for i in range(frames):
        if stop.is_set():
            return
        with open(folder / f"frame_{i:05d}.raw", "wb") as f:
            for _ in range(4):
                f.write(bytes(rng.getrandbits(8) for _ in range(4096)))
                f.flush()
                time.sleep(0.005)
        time.sleep(0.02)


def run_beamline(stack: LocalStack, tmp: Path, frames: int, batch: int,
                 console: Console) -> dict[str, Any]:
    # Prefect runs in this process with its own temporary home and API.
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["FUNCX_FLOWS_HOME"] = str(stack.home)
    from funcx_flows.prefect.server import prefect_api

    with contextlib.ExitStack() as stack_of_contexts:
        with console.status("starting a temporary Prefect API"):
            stack_of_contexts.enter_context(prefect_api())
            beamline = _load_beamline()
        return _run(stack, tmp, frames, batch, console, beamline)


def _run(stack: LocalStack, tmp: Path, frames: int, batch: int, console: Console,
         beamline: ModuleType) -> dict[str, Any]:
    from funcx_flows.triggers import Running, StateStore, files

    detector, published = tmp / "detector", tmp / "published"
    detector.mkdir()
    store = StateStore(tmp / "triggers.db")
    trigger = files("detector", [str(detector)], flow=beamline.beamline, state=store,
                    parameters={"paths": "{paths}", "endpoint": "demo",
                                "publish_dir": str(published)},
                    patterns=["*.raw"], settle_s=0.3, batch_size=batch, batch_window_s=2.0,
                    max_in_flight=2)
    stop = threading.Event()
    writer = threading.Thread(target=_instrument, args=(detector, frames, stop), daemon=True)
    progress = Progress(TextColumn("[bold]beamline frames published"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    started = time.perf_counter()
    done = 0
    with Running(trigger), progress:
        bar = progress.add_task("frames", total=frames)
        writer.start()
        deadline = time.monotonic() + 300 + frames
        while done < frames and time.monotonic() < deadline:
            summaries = list(published.glob("summary-*.json")) if published.exists() else []
            done = sum(json.loads(p.read_text())["frames"] for p in summaries)
            failed = store.counts().get("detector", {}).get("failed", 0)
            progress.update(bar, completed=done)
            if failed:
                break
            time.sleep(0.2)
        stop.set()
        writer.join(10)
    counts = store.counts().get("detector", {})
    store.close()
    result = {"frames_written": frames, "frames_published": done,
              "flow_runs": sum(counts.values()), "flow_runs_failed": counts.get("failed", 0),
              "beamline_s": time.perf_counter() - started}
    table = Table(title="beamline: detector -> file trigger -> Prefect flow -> endpoint")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("frames written by the instrument", str(frames))
    table.add_row("flow runs started (batches)", str(result["flow_runs"]))
    table.add_row("flow runs failed", str(result["flow_runs_failed"]))
    table.add_row("frames reconstructed and published", str(done))
    table.add_row("wall time", f"{result['beamline_s']:.1f} s")
    console.print(table)
    return result
