"""The one way tests wait for something that happens in another process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "a condition",
               interval: float = 0.02) -> T:
    """Call ``predicate`` until it returns something true; that value. Fails the test
    with ``what`` after ``timeout`` seconds (a bound, never a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
