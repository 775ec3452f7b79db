"""The Prefect path of bench_paths: the same flows under different task runners.

``fan``: one no-op task mapped over N items; ``chain``: N tasks, each waiting for
the previous one's result. The tasks are plain ``@task`` functions, so the task
runner alone decides where they run (funcx-flows: on the endpoint; Prefect's
thread pool: threads of the flow's process; Prefect's process pool: 2 spawned
processes). Results are not persisted and not cached, for every runner alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from funcx_flows.prefect.runner import EndpointTaskRunner


@task(cache_policy=NO_CACHE, persist_result=False)
def noop(x: int) -> int:
    return x


@task(cache_policy=NO_CACHE, persist_result=False)
def inc(x: int) -> int:
    return x + 1


@flow(name="bench-fan", persist_result=False)
def fan(n: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    futures = noop.map(range(n))
    return sum(f.result() for f in futures), time.perf_counter() - t0


@flow(name="bench-chain", persist_result=False)
def chain(n: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    x: Any = inc.submit(0)  # futures pass between tasks
    for _ in range(n - 1):
        x = inc.submit(x)
    return int(x.result()), time.perf_counter() - t0


FLOWS: dict[str, tuple[Any, Callable[[int], int]]] = {
    "fan": (fan, lambda n: n * (n - 1) // 2),
    "chain": (chain, lambda n: n),
}


def runners(endpoint: str, workers: int, process_pool: bool) -> dict[str, Callable[[], Any]]:
    """Task runner factories by the name reported (each flow run gets a fresh one)."""
    made: dict[str, Callable[[], TaskRunner[Any]]] = {
        "funcx-flows": lambda: EndpointTaskRunner(endpoint=endpoint),
        "prefect-threads": lambda: ThreadPoolTaskRunner(),
    }
    if process_pool:
        made["prefect-processes"] = lambda: ProcessPoolTaskRunner(max_workers=workers)
    return made


def run_flow(workload: str, n: int, runner: Callable[[], TaskRunner[Any]]) -> tuple[float, float]:
    """Wall time of one flow run (flow run creation, the runner's start and the engine's
    teardown included), and of its body alone (the tasks)."""
    fn, expected = FLOWS[workload]
    configured = fn.with_options(task_runner=runner())
    t0 = time.perf_counter()
    result, body = configured(n)
    elapsed = time.perf_counter() - t0
    if result != expected(n):
        raise AssertionError(f"{workload}({n}) returned {result}, expected {expected(n)}")
    return elapsed, body
