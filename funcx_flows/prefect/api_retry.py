"""Transient answers of the Prefect API retried with the project's retry policy.

A busy Prefect server answers 503 when its database is locked (SQLite under
concurrent flow runs does this). Prefect's client retries after 2, 4, 8 ... s,
so one 503 stalls a flow run for seconds. Underneath Prefect's client, this
transport retries 502/503/504 on the project's policy (``funcx_flows.retry``),
which starts at 50 ms; only when that gives up does Prefect's own retry see
the answer.

    with prefect_client(API_RETRY):      # the sync client of this thread's flow runs
        my_flow(...)
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import ssl
import time
from collections.abc import Iterator
from typing import Any

import certifi
import httpx

from funcx_flows.retry import RetryPolicy

log = logging.getLogger(__name__)
TRANSIENT = frozenset({502, 503, 504})
API_RETRY = RetryPolicy(initial=0.05, max_delay=2.0, max_attempts=8)


class RetryingTransport(httpx.BaseTransport):
    """An httpx transport that sends a request again after a transient answer."""

    def __init__(self, policy: RetryPolicy = API_RETRY,
                 inner: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner or _prefect_like_transport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            response = self.inner.handle_request(request)
            if response.status_code not in TRANSIENT or self.policy.exhausted(attempt):
                return response
            response.read()
            response.close()
            delay = max(self.policy.delay(attempt), _retry_after(response, self.policy))
            log.debug("Prefect API answered %d to %s %s; again in %.2f s (retry %d)",
                      response.status_code, request.method, request.url.path, delay,
                      attempt + 1)
            self.policy.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self.inner.close()


def _retry_after(response: httpx.Response, policy: RetryPolicy) -> float:
    """A server's Retry-After (seconds or a date), capped by the policy's longest wait."""
    value = response.headers.get("Retry-After")
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), policy.max_delay)


def _prefect_like_transport() -> httpx.HTTPTransport:
    """What Prefect's client would build for its API (a given transport replaces all of it):
    its TLS settings, HTTP/2 switch, connection limits and 3 connect retries."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if api.tls_insecure_skip_verify:
        verify = ssl.create_default_context()
        verify.check_hostname = False
        verify.verify_mode = ssl.CERT_NONE
    else:
        verify = ssl.create_default_context(cafile=api.ssl_cert_file or certifi.where())
    return httpx.HTTPTransport(
        verify=verify, http2=api.enable_http2, retries=3,
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8,
                            keepalive_expiry=25))


@contextlib.contextmanager
def prefect_client(policy: RetryPolicy = API_RETRY) -> Iterator[Any]:
    """This thread's sync Prefect client (flow and task runs use it) on a retrying transport.

    One client for the flow runs a thread starts in a row also saves building one per
    run (an SSL context each, ~75 ms here)."""
    from prefect.context import SyncClientContext

    with SyncClientContext(httpx_settings={"transport": RetryingTransport(policy)}) as ctx:
        yield ctx.client
