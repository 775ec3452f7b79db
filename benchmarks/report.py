"""Summaries of a side-by-side run (``run.py``): medians, per-round ratios, Markdown, PNG.

A round maps system -> flat metrics (``NOOP_KEYS`` and ``payload.METRICS``); a
ratio is funcx-flows / peer within one round (same time window, same noise),
and the report gives the median of those ratios, for each of funcx-flows'
systems (``funcx``: a manager process per block; ``funcx-inline``: workers
forked by the endpoint itself) against each peer.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import payload

NOOP_KEYS = ["lat_median_us", "lat_p99_us", "tp_tasks_per_s", "sleep_efficiency",
             "peak_pss_mib"]
CPU_KEYS = ["tp_cpu_us_per_task", "tp_cpu_service_us_per_task", "tp_cpu_endpoint_us_per_task"]
KEYS = ["lat_min_us", *NOOP_KEYS, *CPU_KEYS, *payload.METRICS]
BEFORE = "@before"  # a system's name run on the older checkout (run.py --before)
NAN = float("nan")

Rounds = list[dict[str, dict[str, float]]]


def ours(system: str) -> bool:
    """funcx-flows itself (``funcx``, ``funcx-inline``), as opposed to a peer."""
    return system.startswith("funcx")


def summarize(rounds: Rounds) -> dict[str, Any]:
    systems = list(rounds[0])
    med = {s: {k: statistics.median(r[s][k] for r in rounds if k in r[s])
               for k in KEYS if any(k in r[s] for r in rounds)} for s in systems}
    ratios: dict[str, dict[str, float]] = {}  # "ours / peer" -> metric -> ratio
    before_after: dict[str, dict[str, float]] = {}  # "ours / ours@before" -> ...
    for mine in (s for s in systems if ours(s) and BEFORE not in s):
        for peer in (s for s in systems if not ours(s)):
            ratios[f"{mine} / {peer}"] = _ratios(rounds, mine, peer)
        if mine + BEFORE in systems:
            before_after[f"{mine} / {mine}{BEFORE}"] = _ratios(rounds, mine, mine + BEFORE)
    return {"medians": med, "ratios": ratios, "before_after": before_after, "rounds": rounds}


def _ratios(rounds: Rounds, a: str, b: str) -> dict[str, float]:
    """Per metric, the median over rounds of a's value over b's (same round, same
    noise)."""
    out = {}
    for k in KEYS:
        vals = [r[a][k] / r[b][k] for r in rounds if k in r[a] and k in r[b] and r[b][k]]
        if vals:
            out[k] = statistics.median(vals)
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _has(summary: dict[str, Any], keys: list[str]) -> bool:
    return any(k in m for m in summary["medians"].values() for k in keys)


def _f(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None or math.isnan(value) else format(value / scale, fmt)


def markdown(summary: dict[str, Any]) -> str:
    med, ratios = summary["medians"], summary["ratios"]
    lines: list[str] = []
    if _has(summary, NOOP_KEYS):
        lines += ["No-op tasks:", ""]
        lines += _table(
            ["system", "latency min (ms)", "median (ms)", "p99 (ms)", "tasks/s",
             "sleep efficiency", "peak PSS, whole tree (MiB)"],
            [[s, _f(m.get("lat_min_us"), ".2f", 1e3), _f(m.get("lat_median_us"), ".2f", 1e3),
              _f(m.get("lat_p99_us"), ".2f", 1e3), _f(m.get("tp_tasks_per_s"), ".0f"),
              _f(m.get("sleep_efficiency"), ".2f"), _f(m.get("peak_pss_mib"), ".0f")]
             for s, m in med.items()])
        lines += ["", "funcx-flows / peer, median of per-round ratios "
                  "(latency, memory: lower is better; tasks/s: higher is better):", ""]
        lines += _table(
            ["funcx-flows / peer", "latency median", "latency p99", "tasks/s", "sleep efficiency",
             "peak PSS"],
            [[p, *(_f(r.get(k), ".2f") for k in NOOP_KEYS)] for p, r in ratios.items()])
    if _has(summary, payload.METRICS):
        scale = float(summary.get("pay_scale", 1.0))
        sizes = [s.label for s in payload.SIZES]
        mb = {s.label: f"{s.nbytes / payload.MB:g} MB" for s in payload.SIZES}
        header = ["system"] + [f"{mb[s]} {what}" for s in sizes
                               for what in ("latency median (ms)", "p99 (ms)", "MB/s")]
        lines += ["", "Payloads: echo(bytes) round trip; MB/s counts bytes both ways, "
                  + ", ".join(f"{max(2, round(s.tp_n * scale))} x {mb[s.label]}"
                              for s in payload.SIZES)
                  + " submitted at once:", ""]
        lines += _table(header, [[s, *(_f(m.get(k), ".1f") for k in payload.METRICS)]
                                 for s, m in med.items()])
        lines += ["", "funcx-flows / peer on payloads, median of per-round ratios "
                  "(latency: lower is better; MB/s: higher is better):", ""]
        lines += _table(["funcx-flows / peer", *(h.replace(" (ms)", "") for h in header[1:])],
                        [[p, *(_f(r.get(k), ".2f") for k in payload.METRICS)]
                         for p, r in ratios.items()])
    if summary.get("before_after"):
        keys = [k for k in KEYS if any(k in r for r in summary["before_after"].values())]
        lines += ["", "This checkout / the older one (run.py --before), median of per-round "
                  "ratios (latency, CPU, memory: lower is better; tasks/s, MB/s, efficiency: "
                  "higher is better):", ""]
        lines += _table(["after / before", *keys],
                        [[p, *(_f(r.get(k), ".3f") for k in keys)]
                         for p, r in summary["before_after"].items()])
    return "\n".join(lines) + "\n"


# Metrics where a higher value is better: their cost is before / after.
HIGHER_IS_BETTER = {"tp_tasks_per_s", "sleep_efficiency",
                    *(k for k in payload.METRICS if k.endswith("_per_s"))}


def costs(rounds: Rounds, mine: str) -> dict[str, list[float]]:
    """Per metric, each round's cost of this checkout against the older one (run.py
    --before): above 1 is slower, larger or more CPU, whichever way the metric points."""
    out: dict[str, list[float]] = {}
    for k in KEYS:
        for r in rounds:
            a, b = r.get(mine, {}).get(k), r.get(mine + BEFORE, {}).get(k)
            if a and b:
                out.setdefault(k, []).append(b / a if k in HIGHER_IS_BETTER else a / b)
    return out


def plot_before_after(rounds: Rounds, path: Path, bound: float = 1.05) -> None:
    """Every round's cost ratio per metric and system, with the bound a change must
    keep (``bound``: 5% slower)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [s for s in rounds[0] if ours(s) and BEFORE not in s and s + BEFORE in rounds[0]]
    per = {s: costs(rounds, s) for s in mine}
    keys = [k for k in KEYS if any(k in per[s] for s in mine)]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.7 * len(keys) * len(mine)), 4.5))
    for i, s in enumerate(mine):
        for j, k in enumerate(keys):
            vals = per[s].get(k, [])
            x = j + (i - (len(mine) - 1) / 2) * 0.3
            ax.scatter([x] * len(vals), vals, s=12, alpha=0.6, color=f"C{i}",
                       label=s if j == 0 else None)
            if vals:
                ax.hlines(statistics.median(vals), x - 0.12, x + 0.12, color=f"C{i}")
    ax.axhspan(1 / bound, bound, color="0.9", zorder=0)
    ax.axhline(bound, color="C3", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
    ax.set_ylabel("cost, this checkout / the older one\n(above 1: slower; line: median)")
    ax.legend()
    ax.set_title(f"A change's cost per round, {len(rounds)} rounds (grey: within "
                 f"{(bound - 1) * 100:.0f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = summary["medians"]
    systems = list(med)
    x = list(range(len(systems)))
    panels = []
    if _has(summary, NOOP_KEYS):
        panels += [("no-op round trip (ms)", [("min", "lat_min_us"), ("median", "lat_median_us"),
                                              ("p99", "lat_p99_us")], 1e3),
                   ("no-op tasks/s (all at once)", [("tasks/s", "tp_tasks_per_s")], 1.0),
                   ("sleep(10 ms) efficiency, 2 workers", [("efficiency", "sleep_efficiency")],
                    1.0),
                   ("peak PSS, whole process tree (MiB)", [("PSS", "peak_pss_mib")], 1.0)]
    if _has(summary, payload.METRICS):
        panels += [("payload round trip, median (ms)",
                    [(f"{s.nbytes / payload.MB:g} MB", f"{s.label}_lat_median_ms")
                     for s in payload.SIZES], 1.0),
                   ("payload MB/s (both ways, all at once)",
                    [(f"{s.nbytes / payload.MB:g} MB", f"{s.label}_tp_mb_per_s")
                     for s in payload.SIZES], 1.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (ylabel, series, scale) in zip(axes[0], panels, strict=True):
        width = 0.8 / len(series)
        for i, (label, key) in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar([j + offset for j in x], [med[s].get(key, 0) / scale for s in systems],
                   width=width, label=label)
        ax.set_xticks(x, systems)
        ax.set_ylabel(ylabel)
        if "payload" in ylabel or "no-op round" in ylabel:
            ax.set_yscale("log")
        if len(series) > 1:
            ax.legend()
    fig.suptitle("funcx-flows beside its peers (same run, 2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
