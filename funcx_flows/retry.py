"""The one retry policy: exponential backoff with jitter, used by every component
that reconnects, resubmits or waits for something to happen (agent link, client
requests and streams, triggers, the Globus transfer step, pilot submission, the
CLIs waiting for a process). Tests replace ``sleep`` instead of waiting."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Delays grow ``initial * multiplier**n`` up to ``max_delay``; each is drawn
    uniformly from ``[delay * (1 - jitter), delay]``: with the default 0.5, half
    fixed and half random ("equal jitter": never a burst of immediate retries, and
    peers that failed together spread out). ``jitter=0`` waits exactly;
    ``max_attempts=None`` retries forever (links that must come back)."""

    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.5
    max_attempts: int | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0-based)."""
        base = min(self.max_delay, self.initial * (self.multiplier**attempt))
        return base * (1.0 - self.jitter * self.rng.random())

    def delays(self) -> Iterator[float]:
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield self.delay(attempt)
            attempt += 1

    def exhausted(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt >= self.max_attempts


class Backoff:
    """Mutable companion of a policy for loops that succeed and fail repeatedly:
    ``failed()`` returns the next wait, ``succeeded()`` resets."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempt = 0

    def failed(self) -> float:
        d = self.policy.delay(self.attempt)
        self.attempt += 1
        return d

    def succeeded(self) -> None:
        self.attempt = 0


# Waiting for a process to start or stop, a file to appear: quick at first, then
# every 0.2 s; exact (nothing to spread out).
POLL = RetryPolicy(initial=0.02, multiplier=1.5, max_delay=0.2, jitter=0.0)


def poll_until(predicate: Callable[[], T], timeout: float,
               policy: RetryPolicy = POLL) -> T | None:
    """Call ``predicate`` until it returns something true, waiting the policy's delays
    between calls; that value, or None once ``timeout`` seconds have passed (the
    predicate is asked a last time at the deadline). What it raises goes through."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        policy.sleep(min(policy.delay(attempt), left))
        attempt += 1
