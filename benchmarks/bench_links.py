"""The endpoint link over WebSocket+TLS against CurveZMQ, the TLS proxy's hop, and the
multi-host path with WAN delay (issue 16). One invocation, rounds interleaved.

Part ``local`` (this host, 127.0.0.1): one service, HAProxy terminating TLS in front
of it (deploy/haproxy.cfg, a private CA), and in each round, in rotated order:

    zmq         client -> service (HTTP);  endpoint link: CurveZMQ to the service
    wss         client -> service (HTTP);  endpoint link: WebSocket, TLS via HAProxy
    via-proxy   client -> HAProxy (HTTPS) -> service;  endpoint link: CurveZMQ

each on the same workloads as bench_funcx.py: no-op latency (sequential), 10,000
no-op tasks, 1 MB and 10 MB payloads echoed.

Part ``wan`` (root: network namespaces): the service host behind HAProxy, ``hpc``
and ``client`` each reaching it through a userspace relay that adds DELAY ms each
way (tests/netrelay.py), for DELAY in --delays; no-op latency and throughput.

    python benchmarks/bench_links.py [--part local,wan] [--rounds 3] [--delays 0,1,20]

Writes benchmarks/results/links-<stamp>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests")]

from bench_funcx import PAYLOAD_LIMIT, measure  # noqa: E402

from funcx_flows.localstack import LocalStack, stop_process  # noqa: E402
from funcx_flows.sdk.client import Client  # noqa: E402
from funcx_flows.sdk.executor import Executor  # noqa: E402


def _args(only: str, lat_n: int, tp_n: int) -> argparse.Namespace:
    return argparse.Namespace(only=only, lat_n=lat_n, tp_n=tp_n, sleep_n=0, sleep_s=0.0,
                              workers=2, pay_scale=1.0)


def _proxy(cert: Path, port: int, backend: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FUNCX_PROXY_BIND": f"127.0.0.1:{port}",
           "FUNCX_PROXY_CERT": str(cert), "FUNCX_SERVICE_1": backend}
    with log.open("ab") as out:
        return subprocess.Popen(["haproxy", "-db", "-f", str(REPO / "deploy" / "haproxy.cfg")],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def part_local(rounds: int, lat_n: int, tp_n: int) -> dict[str, list[dict[str, float]]]:
    from pki import CA

    results: dict[str, list[dict[str, float]]] = {"zmq": [], "wss": [], "via-proxy": []}
    with tempfile.TemporaryDirectory(prefix="funcx-links-") as tmp:
        root = Path(tmp)
        ca = CA(root / "pki")
        cert = ca.issue("proxy", dns=["localhost"], ips=["127.0.0.1"])
        stack = LocalStack(root / "home", env={
            "FUNCX_FLOWS_CA_BUNDLE": str(ca.pem),
            "FUNCX_FLOWS_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT),
            "FUNCX_FLOWS_MAX_RESULT_BYTES": str(PAYLOAD_LIMIT)})
        proxy = None
        try:
            url = stack.start_service()
            port = _free_port()
            proxy = _proxy(cert.bundle, port, url.removeprefix("http://"), root / "haproxy.log")
            proxy_url = f"https://127.0.0.1:{port}"
            zmq_ep = stack.start_endpoint("zmq", {"max_workers_per_node": 2, "link": "zmq"})
            wss_ep = stack.start_endpoint("wss", {"max_workers_per_node": 2,
                                                  "service_url": proxy_url})
            token = (stack.home / "token").read_text().strip()
            clients = {"zmq": (Client(url, token), zmq_ep.endpoint_id),
                       "wss": (Client(url, token), wss_ep.endpoint_id),
                       "via-proxy": (Client(proxy_url, token, ca_bundle=str(ca.pem)),
                                     zmq_ep.endpoint_id)}
            order = list(results)
            for r in range(rounds):
                for name in order[r % 3:] + order[:r % 3]:
                    client, eid = clients[name]
                    with Executor(endpoint_id=eid, client=client) as ex:
                        for i in range(100):
                            ex.submit(abs, -i).result()
                        got = measure(ex, _args("lat,tp,pay", lat_n, tp_n))
                    print(f"round {r} {name}: "
                          f"{json.dumps({k: round(v, 2) for k, v in got.items()})}",
                          file=sys.stderr, flush=True)
                    results[name].append(got)
            for client, _ in clients.values():
                client.close()
        finally:
            if proxy is not None:
                stop_process(proxy)
            stack.stop()
    return results


def part_wan(delays: list[float], lat_n: int, tp_n: int) -> dict[str, dict[str, float]]:
    import netns
    from pki import CA

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="funcx-wan-") as tmp, netns.Network() as net:
        root = Path(tmp)
        service, hpc, client, wan = (net.host(n) for n in ("service", "hpc", "client", "wan"))
        net.resolve("service.test", wan)
        ca = CA(root / "pki")
        cert = ca.issue("service", ["service.test"])
        home = root / "service-home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCX_FLOWS_")}
        service.popen([sys.executable, "-m", "funcx_flows.service", "--host", "127.0.0.1",
                       "--port", "8000"], env={**env, "FUNCX_FLOWS_HOME": str(home)},
                      log=root / "service.log")
        while not (home / "token").exists():
            time.sleep(0.1)
        token = (home / "token").read_text().strip()
        service.popen(["haproxy", "-db", "-f", str(REPO / "deploy" / "haproxy.cfg")],
                      env={**env, "FUNCX_PROXY_BIND": f"{service.ip}:443",
                           "FUNCX_PROXY_CERT": str(cert.bundle),
                           "FUNCX_SERVICE_1": "127.0.0.1:8000"}, log=root / "haproxy.log")
        user = {**env, "FUNCX_FLOWS_SERVICE_URL": "https://service.test",
                "FUNCX_FLOWS_TOKEN": token, "FUNCX_FLOWS_CA_BUNDLE": str(ca.pem)}
        for delay in delays:
            relay = wan.popen([sys.executable, str(REPO / "tests" / "netrelay.py"), "--listen",
                               f"{wan.ip}:443", "--to", f"{service.ip}:443",
                               "--delay-ms", str(delay)], log=root / "relay.log")
            ep_home = root / f"hpc-{delay}"
            folder = ep_home / "endpoints" / "ep"
            folder.mkdir(parents=True)
            (folder / "config.yaml").write_text(
                "service_url: https://service.test\nmax_workers_per_node: 2\n")
            ep = hpc.popen([sys.executable, "-c",
                            "from funcx_flows.endpoint.cli import main; main()", "start", "ep",
                            "--foreground"], env={**user, "FUNCX_FLOWS_HOME": str(ep_home)},
                           log=root / f"endpoint-{delay}.log")
            done = client.run([sys.executable, __file__, "--measure", "ep", str(lat_n),
                               str(tp_n)], env={**user, "FUNCX_FLOWS_HOME": str(root / "c")},
                              timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            out[f"{delay:g}ms"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"wan {delay} ms: {out[f'{delay:g}ms']}", file=sys.stderr, flush=True)
            hpc.stop(ep)
            wan.stop(relay)
    return out


def measure_here(name: str, lat_n: int, tp_n: int) -> dict[str, float]:
    """On a host of the ``wan`` part: wait for the endpoint, then lat and tp."""
    with Client() as c:
        deadline = time.monotonic() + 120
        eid = ""
        while not eid:
            assert time.monotonic() < deadline, "the endpoint did not come online"
            eid = next((e["endpoint_id"] for e in c.list_endpoints()
                        if e["name"] == name and e["state"] == "online"), "")
            time.sleep(0.2)
        while not c.get_endpoint_status(eid).get("workers_total"):
            time.sleep(0.2)
        with Executor(endpoint_id=eid, client=c) as ex:
            for i in range(20):
                ex.submit(abs, -i).result()
            return measure(ex, _args("lat,tp", lat_n, tp_n))


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    local, wan = result.get("local", {}), result.get("wan", {})
    fig, axes = plt.subplots(1, 3 if wan else 2, figsize=(13 if wan else 9, 4))
    if local:
        names = list(local)
        med = {n: {k: statistics.median(r[k] for r in local[n]) for k in local[n][0]}
               for n in names}
        axes[0].bar(names, [med[n]["lat_median_us"] / 1000 for n in names], color="#4c72b0")
        axes[0].set_ylabel("no-op round trip, median (ms)")
        axes[0].set_title("latency")
        axes[1].bar(names, [med[n]["tp_tasks_per_s"] for n in names], color="#55a868")
        axes[1].set_ylabel("tasks/s (10,000 no-ops)")
        axes[1].set_title("throughput")
    if wan:
        ax = axes[-1]
        labels = list(wan)
        ax.plot(labels, [wan[k]["tp_tasks_per_s"] for k in labels], "o-", label="tasks/s")
        ax2 = ax.twinx()
        ax2.plot(labels, [wan[k]["lat_median_us"] / 1000 for k in labels], "s--",
                 color="#c44e52", label="latency (ms)")
        ax.set_xlabel("added delay each way")
        ax.set_ylabel("tasks/s")
        ax2.set_ylabel("no-op latency (ms)")
        ax.set_title("across hosts, through a WAN relay")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--part", default="local,wan")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lat-n", type=int, default=1000)
    ap.add_argument("--tp-n", type=int, default=10000)
    ap.add_argument("--delays", default="0,1,20")
    ap.add_argument("--measure", nargs=3, metavar=("ENDPOINT", "LAT_N", "TP_N"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        name, lat_n, tp_n = args.measure
        print(json.dumps(measure_here(name, int(lat_n), int(tp_n))))
        return
    if shutil.which("haproxy") is None:
        sys.exit("bench_links needs HAProxy (apt-get install haproxy)")
    # a SIGTERM ends the run through its finally blocks: the service, the endpoints,
    # the proxy and the network namespaces go with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parts = set(args.part.split(","))
    result: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if "local" in parts:
        result["local"] = part_local(args.rounds, args.lat_n, args.tp_n)
    if "wan" in parts:
        result["wan"] = part_wan([float(d) for d in args.delays.split(",")],
                                 min(args.lat_n, 300), args.tp_n)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"links-{stamp}.json").write_text(json.dumps(result, indent=1))
    plot(result, out / f"links-{stamp}.png")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
