"""One temporary Prefect API for a process that runs flows concurrently.

Without ``PREFECT_API_URL``, each flow run may try to start Prefect's ephemeral
server; concurrent first runs race for its port, and the losers' servers can
outlive the process. Whoever starts flows from several threads (the trigger
runner, the demo) opens one server here first, and closes it at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prefect_api(timeout: int = 120) -> Iterator[str]:
    """Yield the API URL: the configured one, or a temporary server's."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer(port=_free_port())
    server.start(timeout=timeout)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        _reload_settings()
        _warm_up()
        yield server.api_url
    finally:
        _drain()
        os.environ.pop("PREFECT_API_URL", None)
        _reload_settings()
        server.stop()


def _drain() -> None:
    """Logs and events still queued in this process reach the API before it stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _reload_settings() -> None:
    """Prefect reads the environment once, at import (and importing this package
    imports Prefect); threads without a settings context of their own use that copy.
    Rebuilt, it points them all at this API instead of a private ephemeral server each."""
    import prefect.context

    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if refresh is not None:
        refresh()
    else:  # older Prefect: the same, by hand
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.root_settings_context()


def _warm_up() -> None:
    """One trivial flow run first: a new API's first requests are slow to answer."""
    from prefect import flow

    @flow(name="funcx-flows-warm-up")
    def warm_up() -> int:
        return 1

    for attempt in range(5):
        try:
            warm_up()
            return
        except RuntimeError:
            time.sleep(1 + attempt)
