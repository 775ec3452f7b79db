"""The payload workload (issue 7): 1 MB and 10 MB arguments echoed back as results.

Shared by ``bench_funcx.py`` and ``bench_peers_payload.py`` so that every system
runs exactly the same measurement; stdlib only, so it also runs under the peers'
Python. A system plugs in three callables:

    submit_one(data) -> result                  one blocking round trip of echo(data)
    submit_many(data, n) -> handle              n calls of echo(data), submitted at once
    wait_many(handle) -> list of results

Metrics, for each size ``<s>`` in ``SIZES`` (e.g. ``pay1mb``):

    <s>_lat_median_ms, <s>_lat_p99_ms   sequential round trips of echo(data)
    <s>_tp_mb_per_s                     n calls at once: bytes moved both ways
                                        (n x size out + n x size back) / wall time
    <s>_tp_total_s                      wall time of those n calls
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MB = 1_000_000  # decimal, as in MB/s


@dataclass(frozen=True)
class Size:
    label: str
    nbytes: int
    lat_n: int  # sequential calls
    tp_n: int  # calls submitted at once


SIZES = (Size("pay1mb", 1 * MB, lat_n=30, tp_n=100), Size("pay10mb", 10 * MB, lat_n=20, tp_n=20))
LARGEST = max(s.nbytes for s in SIZES)
WARMUP = 2


def echo(data: bytes) -> bytes:
    return data


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _check(result: Any, data: bytes) -> None:
    if result != data:
        got = len(result) if isinstance(result, (bytes, bytearray)) else type(result).__name__
        raise AssertionError(f"echo returned {got}, not the {len(data)} bytes sent")


def measure(submit_one: Callable[[bytes], Any], submit_many: Callable[[bytes, int], Any],
            wait_many: Callable[[Any], list[Any]], *, scale: float = 1.0) -> dict[str, float]:
    """One rep of the payload workload; ``scale`` multiplies the call counts."""
    r: dict[str, float] = {}
    for size in SIZES:
        data = os.urandom(size.nbytes)  # incompressible, and new each rep
        for _ in range(WARMUP):
            _check(submit_one(data), data)
        samples = []
        for _ in range(max(2, round(size.lat_n * scale))):
            t0 = time.perf_counter()
            result = submit_one(data)
            samples.append(time.perf_counter() - t0)
            _check(result, data)
        r[f"{size.label}_lat_median_ms"] = statistics.median(samples) * 1e3
        r[f"{size.label}_lat_p99_ms"] = nearest_rank(samples, 99) * 1e3
        n = max(2, round(size.tp_n * scale))
        t0 = time.perf_counter()
        results = wait_many(submit_many(data, n))
        elapsed = time.perf_counter() - t0
        if len(results) != n:
            raise AssertionError(f"{len(results)} results for {n} calls")
        for res in results:
            _check(res, data)
        r[f"{size.label}_tp_mb_per_s"] = 2 * n * size.nbytes / MB / elapsed
        r[f"{size.label}_tp_total_s"] = elapsed
    return r


# The headline metrics, in report order.
METRICS = [f"{s.label}_{m}" for s in SIZES for m in ("lat_median_ms", "lat_p99_ms", "tp_mb_per_s")]
