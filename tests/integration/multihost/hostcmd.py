"""What the multi-host tests run on their hosts (client, instrument): small user
programs that print one JSON line. ``python hostcmd.py COMMAND [ARGS...]``; the
service URL, token and CA come from the environment, as a user would set them."""

from __future__ import annotations

import json
import os
import sys
import time


def health(timeout: str = "60") -> dict[str, object]:
    """Wait until the service answers through the proxy."""
    from funcx_flows.errors import FuncxFlowsError
    from funcx_flows.sdk.client import Client

    deadline = time.monotonic() + float(timeout)
    last = ""
    while time.monotonic() < deadline:
        try:
            with Client() as c:
                return {"ok": True, "health": c.health()}
        except FuncxFlowsError as exc:
            last = str(exc)
            time.sleep(0.2)
    return {"ok": False, "error": last}


def online(endpoint_name: str, timeout: str = "90") -> dict[str, object]:
    """Wait until the named endpoint is online with workers; its id."""
    from funcx_flows.errors import FuncxFlowsError
    from funcx_flows.sdk.client import Client

    deadline = time.monotonic() + float(timeout)
    with Client() as c:
        while time.monotonic() < deadline:
            try:
                for e in c.list_endpoints():
                    if e["name"] == endpoint_name and e["state"] == "online":
                        st = c.get_endpoint_status(e["endpoint_id"])
                        if st.get("workers_total"):
                            return {"ok": True, "endpoint_id": e["endpoint_id"]}
            except FuncxFlowsError:
                pass
            time.sleep(0.2)
    return {"ok": False}


def where(x: int) -> tuple[int, str]:
    import socket

    return x * x, socket.gethostname()


def nap(x: int, seconds: float) -> int:
    import time

    time.sleep(seconds)
    return x


def run(endpoint_id: str, n: str, seconds: str = "0") -> dict[str, object]:
    """n tasks through an Executor; what came back."""
    from funcx_flows.sdk.executor import Executor

    count, wait = int(n), float(seconds)
    started = time.monotonic()
    with Executor(endpoint_id=endpoint_id) as ex:
        if wait:
            futures = [ex.submit(nap, i, wait) for i in range(count)]
            values = [f.result(timeout=600) for f in futures]
            ids = [f.task_id for f in futures]
            return {"ok": values == list(range(count)), "n": len(values),
                    "unique_ids": len(set(ids)), "seconds": time.monotonic() - started}
        got = list(ex.map(where, range(count), timeout=600))
    return {"ok": [v for v, _ in got] == [i * i for i in range(count)], "n": len(got),
            "hosts": sorted({h for _, h in got}), "seconds": time.monotonic() - started}


def flow(endpoint_name: str) -> dict[str, object]:
    """A Prefect flow whose remote_task runs on the endpoint."""
    from prefect import flow as prefect_flow

    from funcx_flows import remote_task

    @remote_task(endpoint=endpoint_name)
    def square(x: int) -> int:
        return x * x

    @prefect_flow
    def squares(n: int) -> list[int]:
        return [f.result() for f in square.map(range(n))]

    return {"ok": True, "values": squares(8)}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    print(json.dumps(globals()[command](*args)), flush=True)
