"""Hello, endpoint: one Prefect task that runs where the endpoint is.

    funcx-flows service start && funcx-endpoint configure demo && funcx-endpoint start demo
    FUNCX_FLOWS_EXAMPLE_ENDPOINT=demo python flows_examples/hello.py
"""

from __future__ import annotations

import os

from prefect import flow

from funcx_flows import remote_task

ENDPOINT = os.environ.get("FUNCX_FLOWS_EXAMPLE_ENDPOINT", "demo")


@remote_task(endpoint=ENDPOINT, retries=1)
def greet(name: str) -> str:
    import platform

    print(f"greeting {name}")  # shows up in the task's Prefect log
    return f"hello {name}, from {platform.node()}"


@flow(name="hello-endpoint")
def hello(names: tuple[str, ...] = ("beamline", "cluster")) -> list[str]:
    return [greet(n) for n in names]


if __name__ == "__main__":
    for line in hello():
        print(line)
