"""The trigger path of bench_paths: a real file trigger, built from YAML by the
project's own loader, starting a Prefect flow whose task runs on the endpoint.

Stages of one file, all measured from the moment the writer closed it
(wall-clock ``time.time()``, as the trigger's state database records)::

    close -> noticed   (files.seen_at: complete, recorded once)
          -> queued    (runs.created_at: a run exists for it)
          -> flow      (the flow body began: Prefect created the flow run)
          -> result    (the first remote task's result is back in the flow)
          -> done      (the trigger recorded the run as done)
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from prefect import flow

from funcx_flows.prefect.task import remote_task
from funcx_flows.triggers import config as trigger_config
from funcx_flows.triggers.serve import Running, build, wait_until
from funcx_flows.triggers.state import StateStore

ENDPOINT = "bench"
STAGES = ("noticed", "queued", "flow", "result", "done")
_lock = threading.Lock()
_seen: dict[str, dict[str, float]] = {}
_runs: Counter[str] = Counter()


def size_of(path: str) -> int:
    import os

    return os.path.getsize(path)


@flow(name="bench-on-files", persist_result=False)
def on_files(paths: list[str]) -> int:
    began = time.time()
    remote: Any = remote_task(size_of, endpoint=ENDPOINT)
    sizes = [int(remote(p)) for p in paths]
    answered = time.time()
    with _lock:
        for p in paths:
            _runs[p] += 1
            _seen.setdefault(p, {"flow": began, "result": answered})
    return sum(sizes)


CONFIG = """
state_db: {db}
triggers:
  - type: files
    name: bench
    paths: [{folder}]
    patterns: ["*.dat"]
    max_in_flight: {in_flight}
    target:
      kind: flow
      flow: paths_trigger:on_files
      parameters: {{paths: "{{paths}}"}}
"""


class Bench:
    """One trigger served from a YAML config over ``folder``, for as long as entered."""

    def __init__(self, tmp: Path, in_flight: int) -> None:
        self.folder = tmp / "incoming"
        self.folder.mkdir(parents=True)
        self.db = tmp / "triggers.db"
        text = CONFIG.format(db=self.db, folder=self.folder, in_flight=in_flight)
        config = trigger_config.parse(yaml.safe_load(text), "bench_paths")
        self.store = StateStore(self.db)
        self.running = Running(*build(config, self.store))
        self.closed: dict[str, float] = {}

    def __enter__(self) -> Bench:
        self.running.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.running.__exit__(*exc)
        finally:
            self.store.close()

    def write(self, name: str) -> str:
        path = str(self.folder / name)
        with open(path, "wb") as f:
            f.write(os.urandom(1024))
        self.closed[path] = time.time()
        return path

    def done(self) -> int:
        return int(self.store.counts().get("bench", {}).get("done", 0))

    def stages(self, paths: list[str]) -> dict[str, list[float]]:
        """Per stage, seconds from close for each of ``paths``."""
        db = sqlite3.connect(self.db)
        try:
            rows = db.execute("SELECT f.path, f.seen_at, r.created_at, r.updated_at FROM files f "
                              "JOIN runs r ON r.run_id = f.run_id WHERE r.state='done'").fetchall()
        finally:
            db.close()
        got = {p: {"noticed": s, "queued": c, "done": u} for p, s, c, u in rows}
        out: dict[str, list[float]] = {s: [] for s in STAGES}
        with _lock:
            for p in paths:
                times = {**got[p], **_seen[p]}
                for s in STAGES:
                    out[s].append(times[s] - self.closed[p])
        return out


def sequential(tmp: Path, k: int) -> dict[str, list[float]]:
    """K files, one at a time: each waits until its flow run is done."""
    with Bench(tmp, in_flight=4) as bench:
        paths = []
        for i in range(k):
            paths.append(bench.write(f"seq-{i:04d}.dat"))
            if not wait_until(lambda i=i: bench.done() >= i + 1, 120):
                raise AssertionError(f"file {i}: its flow run did not finish in 120 s")
        return bench.stages(paths)


def burst(tmp: Path, n: int, in_flight: int) -> dict[str, Any]:
    """N files written at once; until every flow run is done. Asserts none lost or doubled."""
    with Bench(tmp, in_flight=in_flight) as bench:
        t0 = time.time()
        paths = [bench.write(f"burst-{i:05d}.dat") for i in range(n)]
        written = time.time() - t0
        if not wait_until(lambda: bench.done() >= n, 600):
            raise AssertionError(f"burst: {bench.done()}/{n} flow runs done after 600 s")
        elapsed = time.time() - t0
        time.sleep(1.0)  # a late duplicate would show up here
        counts = bench.store.counts().get("bench", {})
        with _lock:
            started = Counter({p: _runs[p] for p in paths})
        assert counts == {"done": n}, counts
        lost = [p for p in paths if started[p] == 0]
        doubled = [p for p in paths if started[p] > 1]
        assert not lost and not doubled, (lost[:3], doubled[:3])
        lat = bench.stages(paths)
    return {"n": n, "write_s": written, "all_done_s": elapsed, "flow_runs": counts["done"],
            "files_per_s": n / elapsed, "lost": 0, "duplicated": 0, "stages": lat}
