"""The one retry policy: exponential backoff with full jitter, used by every
component that reconnects or resubmits (agent link, client streams, triggers,
pilot submission). Tests replace ``sleep`` instead of waiting."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """Delays grow ``initial * multiplier**n`` up to ``max_delay``; with full
    jitter each delay is drawn uniformly from ``[delay * (1 - jitter), delay]``.
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
