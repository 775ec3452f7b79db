"""The one way tests build a funcx-flows stack: a service, its endpoints and its
users as real processes (``funcx_flows.localstack``), with the options tests vary.

``running(home, ...)`` is the factory; the ``make_stack`` fixture
(tests/conftest.py) calls it for one test, and module-scoped fixtures call it
directly (``with running(...) as stack: yield stack``) so that a stack is built
once per module, not once per test. Stacks that need hosts of their own
(network namespaces, replicas behind a proxy, Slurm) are built elsewhere from the
same ``LocalStack``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pgurl import PG_URL
from sqlalchemy import text

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import Client

# The endpoint config every test stack starts from: two workers and heartbeats
# fast enough that a lost link is noticed within a test's patience.
ENDPOINT: dict[str, Any] = {"max_workers_per_node": 2, "heartbeat_period_s": 0.5,
                            "heartbeat_threshold_s": 5}

# The type of the ``make_stack`` fixture.
MakeStack = Callable[..., LocalStack]


def reset_postgres(url: str) -> None:
    """A clean schema on the tests' PostgreSQL database."""
    from funcx_flows.service.db import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@contextlib.contextmanager
def running(home: Path, *, endpoints: Mapping[str, Mapping[str, Any] | None] | None = None,
            env: Mapping[str, str] | None = None, service_args: Sequence[str] = (),
            database: Literal["sqlite", "postgres"] = "sqlite", healthy: bool = True,
            workers: bool = True) -> Iterator[LocalStack]:
    """A service in ``home`` and the ``endpoints`` named (each config laid over
    ``ENDPOINT``), started and waited for; every process ended on exit.

    ``database="postgres"`` puts the service on the tests' PostgreSQL database
    (FUNCX_FLOWS_TEST_POSTGRES_URL) with a clean schema; ``env`` adds to the
    environment of every process; ``service_args`` to the service's command line;
    ``healthy=False`` does not wait for /v1/health (a service clients must not
    trust); ``workers=False`` waits for the endpoints to be online only."""
    variables = dict(env or {})
    if database == "postgres":
        if not PG_URL:
            raise RuntimeError("PostgreSQL: set FUNCX_FLOWS_TEST_POSTGRES_URL")
        reset_postgres(PG_URL)
        variables["FUNCX_FLOWS_DATABASE_URL"] = PG_URL
    stack = LocalStack(home, env=variables)
    try:
        stack.start_service(*service_args, healthy=healthy)
        for name, config in (endpoints or {}).items():
            stack.start_endpoint(name, {**ENDPOINT, **(config or {})}, workers=workers)
        yield stack
    finally:
        stack.stop()


def create_token(stack: LocalStack, user: str) -> str:
    """A token of a new ``user`` of the stack's service, made by its CLI."""
    out = cli(stack, "token", "create", "--user", user)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def user_client(stack: LocalStack, user: str) -> Client:
    """A client of a new ``user`` (close it)."""
    return Client(stack.service_url, create_token(stack, user),
                  ca_bundle=stack.env.get("FUNCX_FLOWS_CA_BUNDLE"))


def cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``funcx-flows ARGS`` against the stack (the service's CLI, not the endpoint's)."""
    return subprocess.run([sys.executable, "-c", "from funcx_flows.cli import main; main()",
                           *args], env=stack.env, capture_output=True, text=True, timeout=60)
