"""Tables and a plot of a bench_bus.py run: medians over rounds, with their range."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

HEADLINE = ["tp1_delivered_per_s", "tp3_delivered_per_s", "tp1_pub_cpu_us",
            "low1_lat_median_us", "low3_lat_p99_us", "load3_lat_median_us", "load3_lat_p99_us"]

BUS_COLUMNS = [  # (key, header, format)
    ("tp1_delivered_per_s", "notif./s, 1 sub", ",.0f"),
    ("tp3_delivered_per_s", "notif./s, 3 subs (each)", ",.0f"),
    ("tp1_pub_cpu_us", "publisher CPU / notif. (us)", ".1f"),
    ("tp3_server_cpu_us", "server CPU / notif., 3 subs (us)", ".1f"),
    ("tp3_sub_cpu_us", "subscriber CPU / notif. (us)", ".1f"),
    ("low1_lat_median_us", "one at a time, 1 sub: median (us)", ".0f"),
    ("low1_lat_p99_us", "p99 (us)", ".0f"),
    ("low3_lat_median_us", "one at a time, 3 subs: median (us)", ".0f"),
    ("low3_lat_p99_us", "p99 (us)", ".0f"),
    ("load3_lat_median_us", "under load, 3 subs: median (us)", ".0f"),
    ("load3_lat_p99_us", "p99 (us)", ".0f"),
]

PG_COLUMNS = [("tx_per_s", "transactions/s", ",.0f"), ("tasks_per_s", "tasks/s", ",.0f"),
              ("lat_median_ms", "median (ms)", ".2f"), ("lat_p99_ms", "p99 (ms)", ".2f"),
              ("client_cpu_us", "client CPU / tx (us)", ".0f"),
              ("server_cpu_us", "server CPU / tx (us)", ".0f")]


def _cell(values: list[float], fmt: str) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    med = format(statistics.median(vals), fmt)
    if len(vals) == 1 or format(min(vals), fmt) == format(max(vals), fmt):
        return med
    return f"{med} ({format(min(vals), fmt)}-{format(max(vals), fmt)})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def restart_line(r: dict[str, Any]) -> str:
    subs = r["subscribers"]
    return (f"restart {r['engine']} {'crash' if r['crash'] else 'graceful'} round {r['round']}: "
            f"down {r['down_s']:.2f} s, start {r['start_s']:.2f} s, "
            f"noticed {sum(s['noticed'] for s in subs)}/{len(subs)}, silent reconnects "
            f"{sum(s['silent_reconnects'] for s in subs)}, publish failed "
            f"{r['publish_failed']}, missing {[s['missing'] for s in subs]}, unannounced "
            f"{[s['unannounced'] for s in subs]}, flowing after "
            f"{[round(s['flowing_s'] or -1, 2) for s in subs]} s")


def _bus_table(rounds: list[dict[str, dict[str, float]]], load_rate: str) -> list[str]:
    systems = list(rounds[0])
    header = ["system", *(h.replace("under load", f"at {load_rate}/s") for _, h, _ in
                          BUS_COLUMNS)]
    rows = [[s, *(_cell([r[s][k] for r in rounds if k in r[s]], fmt)
                  for k, _, fmt in BUS_COLUMNS)] for s in systems]
    lost = {s: sum(r[s][k] for r in rounds for k in r[s] if k.endswith("_lost"))
            for s in systems}
    out = _table(header, rows)
    out.append("")
    out.append("Notifications lost in these runs (no restart): " + ", ".join(
        f"{s} {lost[s]:.0f}" for s in systems) + ".")
    return out


def _restart_table(runs: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["engine"], r["crash"]), []).append(r)
    rows = []
    for (engine, crash), rs in groups.items():
        subs = [s for r in rs for s in r["subscribers"]]

        def col(key: str, fmt: str, subs: list[dict[str, Any]] = subs) -> str:
            return _cell([s[key] for s in subs if s[key] is not None], fmt)

        rows.append([
            engine, "kill -9 (pg: stop -m immediate)" if crash else "graceful",
            _cell([r["down_s"] for r in rs], ".2f"), _cell([r["start_s"] for r in rs], ".2f"),
            f"{sum(s['noticed'] for s in subs)}/{len(subs)}",
            str(sum(s["silent_reconnects"] for s in subs)),
            col("notice_s", ".3f"), col("back_s", ".2f"), col("flowing_s", ".2f"),
            _cell([float(r["publish_failed"]) for r in rs], ".0f"),
            col("missing", ".0f"), str(sum(s["unannounced"] for s in subs))])
    return _table(["engine", "restart", "stop (s)", "start (s)", "subscribers saw the loss",
                   "silent reconnects", "saw it after (s)", "subscribed again after (s)",
                   "notifications flow again after (s)", "publishes refused",
                   "lost per subscriber", "lost without a disconnect seen"], rows)


def _pg_table(pg: dict[str, Any]) -> list[str]:
    rounds = pg["rounds"]
    names = list(dict.fromkeys(n for r in rounds for n in r if n != "fsync_per_s"))
    rows = [[name, *(_cell([r[name][k] for r in rounds if name in r], fmt)
                     for k, _, fmt in PG_COLUMNS)] for name in names]
    fsync = _cell([r["fsync_per_s"] for r in rounds], ",.0f")
    return [f"pg_test_fsync, fdatasync of one 8 kB write: {fsync} per second.", "",
            *_table(["case (x processes)", *(h for _, h, _ in PG_COLUMNS)], rows)]


def markdown(result: dict[str, Any]) -> str:
    out = [f"Command: `{result['command']}` ({result['stamp']}; load average "
           f"{result['load_avg_start'][0]:.1f} at start, {result['load_avg_end'][0]:.1f} "
           "at the end). Cells: median over rounds (min-max).", ""]
    out[0] = out[0].replace("load average", "1-minute load average on 2 cores")
    if "bus" in result:
        rate = result["command"].split("--load-rate")[1].split()[0] \
            if "--load-rate" in result["command"] else "1000"
        out += ["## The bus", "", *_bus_table(result["bus"], rate), ""]
    if "restart" in result:
        out += ["## Restarts", "", *_restart_table(result["restart"]), ""]
    if "pg" in result:
        out += [f"## PostgreSQL ({result['pg']['database']})", "", *_pg_table(result["pg"]), ""]
    return "\n".join(out)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "bus" not in result:
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), squeeze=False)
    ax = list(axes[0])
    if True:
        rounds = result["bus"]
        systems = list(rounds[0])

        def med(s: str, k: str) -> float:
            return float(statistics.median(r[s][k] for r in rounds))

        x = range(len(systems))
        # the floor relay copies an unframed byte stream (many payloads a read): its
        # throughput is not comparable, only its latency
        buses = [s for s in systems if s != "floor"]
        for i, (k, label) in enumerate([("tp1_delivered_per_s", "1 subscriber"),
                                        ("tp3_delivered_per_s", "3 subscribers (each)")]):
            ax[0].bar([j + i * 0.4 for j in range(len(buses))], [med(s, k) for s in buses],
                      0.4, label=label)
        ax[0].set_xticks([j + 0.2 for j in range(len(buses))], buses)
        ax[0].set_ylabel("notifications/s, one publisher")
        ax[0].legend()
        keys = [("low1_lat_median_us", "1 at a time, 1 sub, median"),
                ("low3_lat_p99_us", "1 at a time, 3 subs, p99"),
                ("load3_lat_median_us", "under load, 3 subs, median"),
                ("load3_lat_p99_us", "under load, 3 subs, p99")]
        for i, (k, label) in enumerate(keys):
            ax[1].bar([j + i * 0.2 for j in x], [med(s, k) for s in systems], 0.2, label=label)
        ax[1].set_xticks([j + 0.3 for j in x], systems)
        ax[1].set_yscale("log")
        ax[1].set_ylabel("publish -> wake-up (us)")
        ax[1].legend(fontsize=8)
        for i, (k, label) in enumerate([("tp1_pub_cpu_us", "publisher"),
                                        ("tp3_server_cpu_us", "server (3 subs)"),
                                        ("tp3_sub_cpu_us", "each subscriber")]):
            ax[2].bar([j + i * 0.27 for j in x], [med(s, k) for s in systems], 0.27,
                      label=label)
        ax[2].set_xticks([j + 0.27 for j in x], systems)
        ax[2].set_ylabel("CPU per notification (us)")
        ax[2].legend()
    fig.suptitle(f"bench_bus.py {result['stamp']}: medians of {len(rounds)} rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs as one: their rounds side by side (ranges over all of them)."""
    out: dict[str, Any] = {
        "command": " ; ".join(sorted({r["command"] for r in results})),
        "stamp": ", ".join(r["stamp"] for r in results),
        "load_avg_start": min((r["load_avg_start"] for r in results), key=lambda x: x[0]),
        "load_avg_end": max((r["load_avg_end"] for r in results), key=lambda x: x[0])}
    for part in ("bus", "restart"):
        if all(part in r for r in results):
            out[part] = [x for r in results for x in r[part]]
    if all("pg" in r for r in results):
        out["pg"] = {"database": results[0]["pg"]["database"],
                     "rounds": [x for r in results for x in r["pg"]["rounds"]]}
    return out


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) < 3:
        raise SystemExit("usage: python benchmarks/busreport.py OUT.png RUN.json [RUN.json...]"
                         "  (prints the tables of the runs together, plots them in OUT.png)")
    merged = merge([json.loads(Path(p).read_text()) for p in sys.argv[2:]])
    plot(merged, Path(sys.argv[1]))
    print(markdown(merged))
