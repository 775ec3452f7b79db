"""Testing your own flows: a real funcx-flows stack for the length of a test session.

``running_stack()`` starts a service on a temporary SQLite database and one endpoint
whose workers are forked by the endpoint itself (the ``inline`` provider), both real
processes in a temporary home, and points ``FUNCX_FLOWS_HOME``,
``FUNCX_FLOWS_SERVICE_URL`` and ``FUNCX_FLOWS_TOKEN`` at them while it runs: code
under test that says ``remote_task(endpoint="test")``, ``Executor(endpoint="test")``
or ``Client()`` reaches them with no change. Nothing is faked: functions are
serialized, stored, dispatched and run in worker processes as in production, so a
function that cannot be pickled, or that raises, fails here as it would there.

With pytest, load the fixtures (``funcx_stack``, and ``funcx_endpoint`` for the
endpoint's name) in your ``conftest.py``::

    pytest_plugins = ["funcx_flows.testing.fixtures"]

Prefect flows also need a Prefect API: use Prefect's own ``prefect_test_harness``
beside it (docs/prefect.md, "Testing your flows").
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import Client

__all__ = ["FuncxTestStack", "running_stack"]

_ENV = ("FUNCX_FLOWS_HOME", "FUNCX_FLOWS_SERVICE_URL", "FUNCX_FLOWS_TOKEN")


@dataclass
class FuncxTestStack:
    """What ``running_stack`` started: where the service answers, the endpoint's name
    and id, and the underlying ``LocalStack`` (to stop or restart parts)."""

    stack: LocalStack
    endpoint: str
    endpoint_id: str
    service_url: str
    token: str

    def client(self) -> Client:
        return Client(self.service_url, self.token)


@contextlib.contextmanager
def running_stack(endpoint: str = "test", *, workers: int = 2,
                  config: Mapping[str, Any] | None = None, home: Path | None = None,
                  environ: MutableMapping[str, str] | None = None,
                  ) -> Iterator[FuncxTestStack]:
    """A service and an endpoint named ``endpoint`` with ``workers`` workers, as real
    processes, for the block's length; ``config`` adds to the endpoint's config.yaml
    (e.g. ``{"provider": "local"}`` for a manager process per block). The variables
    of ``environ`` (default ``os.environ``) point at them meanwhile and are put back
    after; every process is stopped and the temporary home removed."""
    env = os.environ if environ is None else environ
    with contextlib.ExitStack() as cleanup:
        if home is None:
            home = Path(cleanup.enter_context(tempfile.TemporaryDirectory(
                prefix="funcx-flows-test-"))) / "home"
        stack = LocalStack(home)
        cleanup.callback(stack.stop)
        url = stack.start_service()
        ep = stack.start_endpoint(endpoint, {
            "provider": "inline", "max_workers_per_node": workers,
            "heartbeat_period_s": 0.5, "heartbeat_threshold_s": 5, **(config or {})})
        token = (stack.home / "token").read_text().strip()
        saved = {k: env.get(k) for k in _ENV}
        cleanup.callback(_restore, env, saved)
        cleanup.callback(_close_remote_clients)
        env.update({"FUNCX_FLOWS_HOME": str(stack.home), "FUNCX_FLOWS_SERVICE_URL": url,
                    "FUNCX_FLOWS_TOKEN": token})
        yield FuncxTestStack(stack, endpoint, ep.endpoint_id, url, token)


def _restore(env: MutableMapping[str, str], saved: Mapping[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v


def _close_remote_clients() -> None:
    """The Prefect integration keeps a client per service: closed with the stack (and
    Prefect not imported if the tests never did)."""
    remote = sys.modules.get("funcx_flows.prefect._remote")
    if remote is not None:
        remote.registry.close()
