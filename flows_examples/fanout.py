"""Fan one analysis out over many inputs as ONE Prefect task (``remote_map``).

    FUNCX_FLOWS_EXAMPLE_ENDPOINT=demo python flows_examples/fanout.py 10000
"""

from __future__ import annotations

import os
import sys

from prefect import flow, task

from funcx_flows import remote_map

ENDPOINT = os.environ.get("FUNCX_FLOWS_EXAMPLE_ENDPOINT", "demo")


def simulate(seed: int, samples: int = 2000) -> float:
    """A small Monte Carlo estimate of pi; stands in for per-frame analysis."""
    import random

    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(samples))
    return 4.0 * inside / samples


@task
def combine(estimates: list[float]) -> float:
    return sum(estimates) / len(estimates)


@flow(name="fanout")
def fanout(n: int = 1000, endpoint: str = ENDPOINT) -> float:
    estimates = remote_map(simulate, range(n), endpoint=endpoint)
    return combine(estimates)


if __name__ == "__main__":
    print(fanout(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
