"""The beamline pipeline: new detector files -> (Globus transfer) -> reconstruct on
the HPC endpoint -> publish a summary.

A file trigger starts it with the paths of new files (one file or a batch):

    beamline(paths=["/detector/run7/frame_0001.raw", ...], endpoint="hpc",
             publish_dir="/data/summaries")

With ``transfer`` set (source and destination Globus collections and the
destination folder), the files first travel to the compute site and the
reconstruction reads them there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from funcx_flows import remote_map
from funcx_flows.prefect.transfer import transfer as globus_transfer

ENDPOINT = os.environ.get("FUNCX_FLOWS_EXAMPLE_ENDPOINT", "demo")


def reconstruct(path: str) -> dict[str, Any]:
    """Per-frame analysis on the endpoint: byte statistics and a coarse histogram
    (stands in for a tomographic reconstruction)."""
    import hashlib
    from pathlib import Path

    data = Path(path).read_bytes()
    if not data:
        raise ValueError(f"{path} is empty")
    histogram = [0] * 16
    for b in data:
        histogram[b >> 4] += 1
    return {"path": path, "bytes": len(data), "mean": sum(data) / len(data), "max": max(data),
            "histogram": histogram, "sha256": hashlib.sha256(data).hexdigest()}


@task
def publish(results: list[dict[str, Any]], publish_dir: str | None) -> dict[str, Any]:
    summary = {
        "frames": len(results),
        "bytes": sum(r["bytes"] for r in results),
        "mean": (sum(r["mean"] * r["bytes"] for r in results)
                 / max(1, sum(r["bytes"] for r in results))),
        "files": [r["path"] for r in results],
        "published_at": time.time(),
    }
    if publish_dir:
        out = Path(publish_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = f"summary-{int(summary['published_at'] * 1000)}-{len(results)}.json"
        (out / name).write_text(json.dumps({**summary, "frames_detail": results}, indent=1))
        summary["summary_file"] = str(out / name)
    get_run_logger().info("published a summary of %d frames", len(results))
    return summary


@flow(name="beamline")
def beamline(paths: list[str], endpoint: str = ENDPOINT, publish_dir: str | None = None,
             transfer: dict[str, str] | None = None) -> dict[str, Any]:
    """``transfer``: {"source": collection id, "destination": collection id,
    "destination_dir": folder at the compute site} to move the files first."""
    if transfer:
        dest = transfer["destination_dir"].rstrip("/")
        moved = [f"{dest}/{Path(p).name}" for p in paths]
        globus_transfer(transfer["source"], transfer["destination"],
                        list(zip(paths, moved, strict=True)), label="beamline frames")
        paths = moved
    results = remote_map(reconstruct, paths, endpoint=endpoint)
    return publish(results, publish_dir)


if __name__ == "__main__":
    import sys

    print(beamline(sys.argv[1:]))
