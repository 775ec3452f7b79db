"""Faults between hosts: the HPC site falls off the network, the proxy restarts, the
WAN to the site is slow and drops connections. Every task ends once, correctly."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from waiting import wait_until

NETRELAY = Path(__file__).resolve().parents[2] / "netrelay.py"


def _spool_empty(facility, name: str) -> bool:
    spool = facility.root / "hpc-home" / "endpoints" / name / "spool.db"
    with sqlite3.connect(spool) as db:
        return db.execute("SELECT count(*) FROM results").fetchone()[0] == 0


def test_hpc_cut_off_for_30s_with_2000_tasks_in_flight(facility):
    with facility.endpoint("cut", {"max_workers_per_node": 8}) as eid:
        run = facility.start_on(facility.client, "run", eid, "2000", "0.05")
        time.sleep(4)  # submitted, and a few done: most are in flight
        facility.hpc.cut()
        try:
            time.sleep(30)
        finally:
            facility.hpc.restore()
        answer = facility.answer(run)
        assert answer["ok"] and answer["n"] == 2000 and answer["unique_ids"] == 2000, answer
        log = facility.log("endpoint-cut.log")
        assert "link to the service lost" in log
        assert log.count("connected to the service") >= 2, log[-3000:]
        wait_until(lambda: _spool_empty(facility, "cut"), 30, "the spool to drain")


def test_the_proxy_restarts_mid_run(facility):
    with facility.endpoint("proxy", {"max_workers_per_node": 8}) as eid:
        run = facility.start_on(facility.client, "run", eid, "600", "0.05")
        time.sleep(1.5)
        facility.stop_proxy()
        time.sleep(2)
        facility.start_proxy()
        answer = facility.answer(run)
        assert answer["ok"] and answer["n"] == 600 and answer["unique_ids"] == 600, answer
        log = facility.log("endpoint-proxy.log")
        assert log.count("connected to the service") >= 2, log[-3000:]


def test_a_slow_lossy_wan_to_hpc(facility):
    """50 ms each way, a connection cut every 2-5 s, stalls of 2 s."""
    relay = facility.wan.popen(
        [sys.executable, str(NETRELAY), "--listen", f"{facility.wan.ip}:443",
         "--to", f"{facility.service.ip}:443", "--delay-ms", "50", "--cut-after", "2:5",
         "--stall-every", "8", "--stall-s", "2", "--seed", "7"],
        log=facility.root / "relay.log")
    facility.net.resolve("service.test", facility.wan, seen_from=[facility.hpc])
    try:
        with facility.endpoint("wan", {"max_workers_per_node": 4}) as eid:
            answer = facility.answer(facility.start_on(facility.client, "run", eid, "600",
                                                       "0.05"))
            assert answer["ok"] and answer["n"] == 600 and answer["unique_ids"] == 600, answer
            wait_until(lambda: _spool_empty(facility, "wan"), 60, "the spool to drain")
        # the WAN did cut the link, more than once, and the endpoint came back each time
        assert facility.log("endpoint-wan.log").count("connected to the service") >= 3
    finally:
        facility.net.resolve("service.test", facility.service, seen_from=[facility.hpc])
        facility.wan.stop(relay)
