"""The Activity page: tasks per interval by how they ended, and latency
percentiles (received to completed) per endpoint, over the last hour or day.

Built from the user's own task listing (the same read as the Tasks page), at
most ``MAX_TASKS`` of the newest: a page view costs one bounded query, and
nothing is computed while nobody looks.
"""

from __future__ import annotations

import math
import time
from typing import Any

from funcx_flows.errors import InvalidRequest
from funcx_flows.service import lifecycle as lc
from funcx_flows.service.api.deps import Parts
from funcx_flows.service.store import User
from funcx_flows.service.ui import plots
from funcx_flows.service.ui.tasklist import list_tasks

WINDOWS = {"hour": (3600.0, 60.0), "day": (86400.0, 900.0)}  # span, bin width
MAX_TASKS = 10_000
ENDED = (lc.SUCCESS, lc.FAILED, lc.CANCELLED)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def build(p: Parts, user: User, window: str, now: float | None = None) -> dict[str, Any]:
    if window not in WINDOWS:
        raise InvalidRequest(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    span, width = WINDOWS[window]
    end = time.time() if now is None else now
    start = end - span
    rows = list_tasks(p.store, user, since=start, limit=MAX_TASKS)
    names = {e["endpoint_id"]: e["name"] for e in p.store.list_endpoints(user, True)}
    return summarize(rows, names, start, span, width, window) | {"truncated":
                                                                 len(rows) >= MAX_TASKS}


def summarize(rows: list[dict[str, Any]], names: dict[str, str], start: float, span: float,
              width: float, window: str) -> dict[str, Any]:
    n = int(span // width)
    labels = [time.strftime("%H:%M", time.localtime(start + i * width)) for i in range(n)]
    ended: dict[str, list[int]] = {s: [0] * n for s in ENDED}
    latency: dict[str, list[list[float]]] = {}
    for r in rows:
        done = r.get("t_completed")
        if r["state"] not in ended or not done or not start <= done < start + span:
            continue
        i = int((done - start) // width)
        ended[r["state"]][i] += 1
        if r["state"] == lc.SUCCESS and r.get("t_received"):
            latency.setdefault(r["endpoint_id"], [[] for _ in range(n)])[i].append(
                done - r["t_received"])
    charts = []
    for endpoint_id, bins in sorted(latency.items(), key=lambda kv: names.get(kv[0], kv[0])):
        series: dict[str, list[float | None]] = {
            q: [percentile(b, float(q[1:])) if b else None for b in bins]
            for q in ("p50", "p95", "p99")}
        every = [v for b in bins for v in b]
        charts.append({"endpoint_id": endpoint_id, "name": names.get(endpoint_id, endpoint_id),
                       "svg": plots.lines(labels, series, "s"), "count": len(every),
                       "p50": percentile(every, 50), "p95": percentile(every, 95)})
    per = "minute" if width == 60 else f"{width / 60:.0f} minutes"
    return {"window": window, "per": per, "total": sum(map(sum, ended.values())),
            "counts": {s: sum(v) for s, v in ended.items()},
            "bars": plots.stacked_bars(labels, ended), "latency": charts}
