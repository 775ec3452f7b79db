"""Which bus carries wake-ups between service replicas (issue 17): PostgreSQL
LISTEN/NOTIFY, Redis pub/sub or RabbitMQ, measured side by side on this machine,
and what PostgreSQL itself allows first.

Each engine is a private server from Debian's packages (busengines.py) on a
loopback port of its own; one publisher (this process) and N subscriber
processes, each as a replica would hold it (busclients.py). Rounds interleave
the engines (rotated order each round), with a bare socket relay as this
machine's floor for two hops (busengines.FloorRelay, not a candidate). Per engine:

    throughput   one publisher as fast as it can, to N = 1 and 3 subscribers:
                 notifications/s delivered, publisher CPU per notification
                 (time.process_time), the server's CPU, the subscribers' CPU
    latency      publish -> subscriber wake-up, median and p99: one at a time
                 (2-4 ms apart), and paced at --load-rate/s to 3 subscribers
    restart      --restart-rate/s to 3 subscribers while the server is stopped
                 (graceful, then as a crash) and started again: whether
                 subscribers notice, when they are subscribed again, when
                 notifications flow again, how many were lost and whether any
                 loss was not announced by a disconnect

Part ``pg`` (pglimits.py) measures the shared PostgreSQL of the tests (the
database in FUNCX_FLOWS_TEST_POSTGRES_URL): single-row commits/s, the store's
submit and complete transactions from 1, 2 and 4 processes, and the same with a
NOTIFY in every transaction.

    python benchmarks/bench_bus.py [--part bus,restart,pg] [--rounds 3]

Writes benchmarks/results/bus-<stamp>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import busreport  # noqa: E402
from busclients import BusLost, connect  # noqa: E402
from busengines import ENGINES, FLOOR  # noqa: E402

USER = str(uuid.uuid4())
# The systems compared: (name, engine, publisher's synchronous_commit). A NOTIFY
# sent on its own is a transaction; "postgres-async" commits it without waiting
# for the disk (inside the store's own transactions: part pg).
SYSTEMS = [("postgres", "postgres", True), ("postgres-async", "postgres", False),
           ("redis", "redis", True), ("rabbitmq", "rabbitmq", True),
           ("floor", "floor", True)]  # calibration: busengines.FloorRelay


def payload(seq: int) -> bytes:
    """~100 bytes, as a "results for user U up to seq N" wake-up would be."""
    return json.dumps({"kind": "results", "user": USER, "seq": seq,
                       "t": time.monotonic_ns()}).encode()


# ------------------------------------------------------------- subscribers --

def _subscriber(engine: str, url: str, pipe: Any) -> None:
    """A subscriber process: records (receive time, payload) until told to stop;
    when its connection ends, notes when, and subscribes again every 50 ms."""
    records: list[tuple[int, bytes]] = []
    events: list[tuple[str, int, str]] = []

    def sink(body: bytes) -> None:
        records.append((time.monotonic_ns(), body))

    bus = connect(engine, url, "sub")
    pipe.send("ready")
    cpu0 = time.process_time()
    while True:
        try:
            bus.receive(0.05, sink)
        except BusLost as exc:
            events.append(("lost", time.monotonic_ns(), str(exc)[:200]))
            bus.close()
            while True:
                try:
                    bus = connect(engine, url, "sub")
                    events.append(("back", time.monotonic_ns(), ""))
                    break
                except Exception:
                    time.sleep(0.05)
        if pipe.poll():
            cmd = pipe.recv()
            if cmd == "count":
                pipe.send(len(records))
            else:
                pipe.send({"records": records, "events": events,
                           "cpu": time.process_time() - cpu0,
                           "silent_reconnects": bus.reconnects})
                bus.close()
                return


class Subscribers:
    """N subscriber processes, subscribed before the first publish."""

    def __init__(self, engine: str, url: str, n: int) -> None:
        ctx = mp.get_context("fork")
        self.pipes, self.procs = [], []
        for _ in range(n):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_subscriber, args=(engine, url, theirs), daemon=True)
            p.start()
            self.pipes.append(mine)
            self.procs.append(p)
        for pipe in self.pipes:
            if not pipe.poll(60):
                raise TimeoutError("a subscriber did not subscribe within 60 s")
            assert pipe.recv() == "ready"

    def wait_for(self, n: int, quiet_s: float = 2.0, cap_s: float = 60.0) -> None:
        """Until every subscriber has ``n`` records, or none grew for ``quiet_s``."""
        last, still, t0 = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - t0 < cap_s:
            counts = []
            for pipe in self.pipes:
                pipe.send("count")
                counts.append(pipe.recv())
            if min(counts) >= n:
                return
            if sum(counts) != last:
                last, still = sum(counts), time.monotonic()
            elif time.monotonic() - still > quiet_s:
                return
            time.sleep(0.05)

    def stop(self) -> list[dict[str, Any]]:
        out = []
        for pipe in self.pipes:
            pipe.send("stop")
            out.append(pipe.recv())
        for p in self.procs:
            p.join(10)
        return out


# ------------------------------------------------------------ measurements --

def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _deliveries(subs: list[dict[str, Any]]) -> list[dict[int, tuple[int, int]]]:
    """Per subscriber: seq -> (publish time, receive time), in ns."""
    out = []
    for s in subs:
        got: dict[int, tuple[int, int]] = {}
        for recv, body in s["records"]:
            msg = json.loads(body)
            got.setdefault(msg["seq"], (msg["t"], recv))
        out.append(got)
    return out


def _latencies_us(got: list[dict[int, tuple[int, int]]]) -> list[float]:
    return [(r - t) / 1e3 for g in got for t, r in g.values()]


def throughput(engine: Any, system: tuple[str, str, bool], n_subs: int,
               seconds: float) -> dict[str, float]:
    """One publisher as fast as it goes for ``seconds``; then the subscribers drain."""
    _, kind, sync = system
    subs = Subscribers(kind, engine.url, n_subs)
    pub = connect(kind, engine.url, "pub", sync)
    server0, cpu0, t0 = engine.server_cpu(), time.process_time(), time.monotonic()
    sent, end = 0, t0 + seconds
    while time.monotonic() < end:
        for _ in range(100):
            pub.publish(payload(sent))
            sent += 1
    pub_s, pub_cpu = time.monotonic() - t0, time.process_time() - cpu0
    subs.wait_for(sent)
    server = engine.server_cpu() - server0
    res = subs.stop()
    pub.close()
    got = _deliveries(res)
    first = min(t for g in got for t, _ in g.values())
    rates = [len(g) / ((max(r for _, r in g.values()) - first) / 1e9) for g in got if g]
    lat = _latencies_us(got)
    return {"published_per_s": sent / pub_s, "delivered_per_s": min(rates),
            "lost": float(sum(sent - len(g) for g in got)),
            "pub_cpu_us": pub_cpu / sent * 1e6, "server_cpu_us": server / sent * 1e6,
            "sub_cpu_us": statistics.mean(s["cpu"] for s in res) / sent * 1e6,
            "burst_lat_median_us": _pct(lat, 0.5), "burst_lat_p99_us": _pct(lat, 0.99)}


def paced(engine: Any, system: tuple[str, str, bool], n_subs: int, count: int,
          rate: float | None) -> dict[str, float]:
    """``count`` notifications at ``rate``/s (None: one at a time, 2-4 ms apart)."""
    _, kind, sync = system
    subs = Subscribers(kind, engine.url, n_subs)
    pub = connect(kind, engine.url, "pub", sync)
    rnd = random.Random(17)
    cpu_ns, t0 = 0, time.monotonic()
    for i in range(count):
        due = t0 + i / rate if rate else time.monotonic() + rnd.uniform(0.002, 0.004)
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        c0 = time.process_time_ns()
        pub.publish(payload(i))
        cpu_ns += time.process_time_ns() - c0
    subs.wait_for(count)
    res = subs.stop()
    pub.close()
    lat = _latencies_us(_deliveries(res))
    return {"lat_median_us": _pct(lat, 0.5), "lat_p99_us": _pct(lat, 0.99),
            "pub_cpu_us": cpu_ns / count / 1e3,
            "achieved_per_s": count / (time.monotonic() - t0),
            "lost": float(count * n_subs - len(lat))}


def restart(engine: Any, kind: str, crash: bool, rate: float, before_s: float = 2.0,
            after_s: float = 3.0) -> dict[str, Any]:
    """Publish at ``rate``/s to 3 subscribers while the server restarts."""
    subs = Subscribers(kind, engine.url, 3)
    pub: Any = connect(kind, engine.url, "pub")
    marks: dict[str, int] = {}

    def bounce() -> None:
        time.sleep(before_s)
        marks["stop"] = time.monotonic_ns()
        engine.stop(crash=crash)
        marks["stopped"] = time.monotonic_ns()
        engine.start()
        marks["started"] = time.monotonic_ns()

    t = threading.Thread(target=bounce)
    t.start()
    ok: dict[int, int] = {}  # seq -> publish time, for publishes that raised nothing
    failed: list[int] = []
    t0, i, next_try = time.monotonic(), 0, 0.0
    while t.is_alive() or time.monotonic() < (marks.get("started", 0) / 1e9 + after_s):
        pause = t0 + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if pub is None and time.monotonic() >= next_try:
            try:
                pub = connect(kind, engine.url, "pub")
            except Exception:
                next_try = time.monotonic() + 0.1
        body = payload(i)
        if pub is None:
            failed.append(i)
        else:
            try:
                pub.publish(body)
                ok[i] = json.loads(body)["t"]
            except BusLost:
                failed.append(i)
                pub.close()
                pub = None
        i += 1
    t.join()
    subs.wait_for(len(ok), quiet_s=1.0)
    res = subs.stop()
    if pub is not None:
        pub.close()
    return _restart_verdict(marks, ok, failed, res)


def _restart_verdict(marks: dict[str, int], ok: dict[int, int], failed: list[int],
                     res: list[dict[str, Any]]) -> dict[str, Any]:
    per_sub = []
    for s, got in zip(res, _deliveries(res), strict=True):
        lost_at = [e[1] for e in s["events"] if e[0] == "lost"]
        back_at = [e[1] for e in s["events"] if e[0] == "back"]
        missing = [q for q in ok if q not in got]
        # a subscriber that re-reads the tables once subscribed again covers every
        # notification published before that; a loss after it, or with no
        # disconnect seen at all, would go unnoticed
        covered_until = max(back_at) if back_at else 0
        unannounced = [q for q in missing if ok[q] > covered_until]
        resumed = max(back_at) if back_at else marks["stopped"]
        after = [r for _, r in got.values() if r > resumed]
        per_sub.append({
            "noticed": bool(lost_at), "silent_reconnects": s["silent_reconnects"],
            "notice_s": (min(lost_at) - marks["stop"]) / 1e9 if lost_at else None,
            "back_s": (max(back_at) - marks["stop"]) / 1e9 if back_at else None,
            "flowing_s": (min(after) - marks["stop"]) / 1e9 if after else None,
            "missing": len(missing), "unannounced": len(unannounced),
            "first_error": next((e[2] for e in s["events"] if e[0] == "lost"), "")})
    return {"down_s": (marks["stopped"] - marks["stop"]) / 1e9,
            "start_s": (marks["started"] - marks["stopped"]) / 1e9,
            "published_ok": len(ok), "publish_failed": len(failed), "subscribers": per_sub}


# ------------------------------------------------------------------- parts --

def part_bus(root: Path, rounds: int, seconds: float, load_rate: float,
             low_n: int) -> list[dict[str, dict[str, float]]]:
    engines: dict[str, Any] = {k: cls(root / k) for k, cls in {**ENGINES, **FLOOR}.items()}
    out: list[dict[str, dict[str, float]]] = []
    try:
        for e in engines.values():
            e.start()
        for rnd in range(rounds):
            order = SYSTEMS[rnd % len(SYSTEMS):] + SYSTEMS[:rnd % len(SYSTEMS)]
            row: dict[str, dict[str, float]] = {}
            for system in order:
                eng = engines[system[1]]
                m: dict[str, float] = {}
                for n in (1, 3):
                    m.update({f"tp{n}_{k}": v for k, v in
                              throughput(eng, system, n, seconds).items()})
                    m.update({f"low{n}_{k}": v for k, v in
                              paced(eng, system, n, low_n, None).items()})
                m.update({f"load3_{k}": v for k, v in
                          paced(eng, system, 3, int(load_rate * seconds), load_rate).items()})
                row[system[0]] = m
                print(f"round {rnd + 1} {system[0]}: " + ", ".join(
                    f"{k}={m[k]:.0f}" for k in busreport.HEADLINE if k in m), flush=True)
            out.append(row)
    finally:
        for e in engines.values():
            e.close()
    return out


def part_restart(root: Path, rounds: int, rate: float) -> list[dict[str, Any]]:
    out = []
    engines: dict[str, Any] = {k: cls(root / ("r-" + k)) for k, cls in ENGINES.items()}
    try:
        for e in engines.values():
            e.start()
        for rnd in range(rounds):
            for kind, eng in engines.items():
                for crash in (False, True):
                    r = restart(eng, kind, crash, rate)
                    r.update(engine=kind, crash=crash, round=rnd + 1)
                    out.append(r)
                    print(busreport.restart_line(r), flush=True)
    finally:
        for e in engines.values():
            e.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="bus,restart,pg")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="per throughput/load run")
    ap.add_argument("--load-rate", type=float, default=1000.0)
    ap.add_argument("--low-n", type=int, default=400, help="one-at-a-time notifications")
    ap.add_argument("--restart-rounds", type=int, default=2)
    ap.add_argument("--restart-rate", type=float, default=200.0)
    ap.add_argument("--pg-seconds", type=float, default=3.0)
    args = ap.parse_args()
    parts = set(args.part.split(","))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {"command": " ".join(["python", "benchmarks/bench_bus.py",
                                                   *sys.argv[1:]]),
                              "stamp": stamp, "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="funcx-bus-") as tmp:
        root = Path(tmp)
        if "bus" in parts:
            result["bus"] = part_bus(root, args.rounds, args.seconds, args.load_rate,
                                     args.low_n)
        if "restart" in parts:
            result["restart"] = part_restart(root, args.restart_rounds, args.restart_rate)
    if "pg" in parts:
        import pglimits

        result["pg"] = pglimits.run(args.rounds, args.pg_seconds)
    result["load_avg_end"] = os.getloadavg()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"bus-{stamp}.json").write_text(json.dumps(result, indent=1))
    md = busreport.markdown(result)
    (out / f"bus-{stamp}.md").write_text(md)
    busreport.plot(result, out / f"bus-{stamp}.png")
    print(md)
    print(f"wrote {out}/bus-{stamp}.json, .md, .png")


if __name__ == "__main__":
    main()
