"""Calls to Globus Transfer that end by a deadline, whatever Globus answers.

globus-sdk retries 429 and 5xx answers and network errors on its own (up to 5
times, up to 10 s apart) and waits up to 60 s for an answer; a deadline of a few
seconds cannot hold through that. So the transfer step talks through its own
shallow copy of the user's client: the same base URL and authorizer (or
GlobusApp), but a transport of its own whose wait for an answer is cut to the
time left, and no SDK retries but the token refresh after a 401. The retries
are the step's, paced by the project's ``RetryPolicy`` and stopped at the
deadline (or after a number of attempts, where there is no deadline).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import globus_sdk
from globus_sdk.transport import RequestsTransport, RetryConfig
from globus_sdk.transport.default_retry_checks import check_expired_authorization

from funcx_flows.retry import Backoff, RetryPolicy

T = TypeVar("T")
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

RETRYABLE_STATUS = (429, 500, 502, 503, 504)
_MIN_WAIT_S = 0.05  # an HTTP wait shorter than this cannot get an answer


class Deadline:
    """A point in monotonic time (or none)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.seconds = seconds
        self.at = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - self.clock()

    def passed(self) -> bool:
        return self.at is not None and self.clock() >= self.at


class DeadlinePassed(Exception):
    """The deadline passed before Globus answered; ``last`` is the last busy answer."""

    def __init__(self, what: str, last: str | None) -> None:
        super().__init__(f"deadline passed while trying to {what}"
                         + (f" (last answer: {last})" if last else ""))
        self.what = what
        self.last = last


def describe(exc: BaseException) -> str:
    """A Globus error in one line: status, code and message, or the network failure."""
    if isinstance(exc, globus_sdk.GlobusAPIError):
        return f"{exc.http_status} {exc.code}: {exc.message}"
    if isinstance(exc, globus_sdk.NetworkError):
        return f"network error: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def retryable(exc: BaseException) -> bool:
    """Busy (429), failing (5xx) or unreachable: asking again may help."""
    if isinstance(exc, globus_sdk.NetworkError):
        return True
    return isinstance(exc, globus_sdk.GlobusAPIError) and exc.http_status in RETRYABLE_STATUS


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, globus_sdk.GlobusAPIError) and exc.http_status in (429, 503):
        try:
            return float(exc.headers.get("Retry-After", ""))
        except ValueError:
            return None
    return None


def private_client(client: globus_sdk.TransferClient) -> globus_sdk.TransferClient:
    """A copy of ``client`` that shares its authorization but not its transport or retries."""
    own = copy.copy(client)
    own.retry_config = RetryConfig(max_retries=1)
    own.retry_config.checks.register_check(check_expired_authorization)
    own.transport = RequestsTransport(verify_ssl=client.transport.verify_ssl,
                                      http_timeout=client.transport.http_timeout or -1)
    own.transport.headers.update(client.transport.headers)
    return own


class GlobusCalls:
    """The step's calls to Transfer: each one retried while Globus is busy, never past
    its deadline."""

    def __init__(self, client: globus_sdk.TransferClient, logger: Logger,
                 policy: RetryPolicy | None = None) -> None:
        self.client = private_client(client)
        self.logger = logger
        self.policy = policy or RetryPolicy(initial=0.5, max_delay=30.0)
        self._longest_wait = client.transport.http_timeout

    def close(self) -> None:
        self.client.transport.close()

    def __enter__(self) -> GlobusCalls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bound_wait(self, deadline: Deadline) -> None:
        remaining = deadline.remaining()
        longest = self._longest_wait if self._longest_wait is not None else math.inf
        if remaining is not None:
            longest = min(longest, max(remaining, _MIN_WAIT_S))
        self.client.transport.http_timeout = None if math.isinf(longest) else longest

    def call(self, what: str, fn: Callable[[globus_sdk.TransferClient], T], deadline: Deadline,
             *, attempts: int | None = None, busy: list[str] | None = None,
             pace: float = 0.0) -> T:
        """``fn(client)``, asked again while Globus is busy or unreachable, at least
        ``pace`` seconds apart. Raises ``DeadlinePassed`` at the deadline, the last error
        after ``attempts`` tries, and other errors at once. The busy answers seen are
        appended to ``busy``."""
        backoff = Backoff(self.policy)
        seen: list[str] = [] if busy is None else busy
        tries = 0
        while True:
            if deadline.passed():
                raise DeadlinePassed(what, seen[-1] if seen else None)
            self._bound_wait(deadline)
            try:
                return fn(self.client)
            except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
                if not retryable(exc):
                    raise
                tries += 1
                seen.append(describe(exc))
                if attempts is not None and tries >= attempts:
                    raise
                delay = max(pace, _retry_after(exc) or backoff.failed())
                remaining = deadline.remaining()
                if remaining is not None:
                    if remaining <= 0:
                        raise DeadlinePassed(what, seen[-1]) from exc
                    delay = min(delay, remaining)
                if tries == 1 or seen[-1] != seen[-2] or tries % 10 == 0:
                    self.logger.warning("Globus busy or unreachable while trying to %s (%s); "
                                        "trying again in %.1fs (try %d)", what, seen[-1], delay,
                                        tries + 1)
                self.policy.sleep(delay)

    def cancel(self, task_id: str, grace_s: float) -> tuple[bool, str]:
        """Ask Globus to cancel, for at most ``grace_s``: (whether it is cancelled or had
        ended, Globus's answer or why not)."""
        try:
            answer: Any = self.call(f"cancel transfer {task_id}",
                                    lambda c: c.cancel_task(task_id), Deadline(grace_s))
        except (DeadlinePassed, globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
            return False, describe(exc) if not isinstance(exc, DeadlinePassed) else str(exc)
        return True, f"{answer.get('code')}: {answer.get('message')}"
