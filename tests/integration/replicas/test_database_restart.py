"""PostgreSQL restarted under two replicas (a server of the test's own): while it is
down they answer 503 storage_unavailable and are not ready; they recover by
themselves, with their bus, and work submitted before, during and after is served."""

from __future__ import annotations

import shutil
from concurrent.futures import as_completed
from pathlib import Path

import pytest
from privatepg import PrivatePostgres, binaries
from replicastack import free_port, running_cluster
from waiting import wait_until

from funcx_flows.errors import ServiceUnavailable
from funcx_flows.retry import RetryPolicy
from funcx_flows.sdk.executor import Executor


def square(x):
    return x * x


@pytest.fixture
def private_pg(need):
    need(binaries() is not None, "PostgreSQL's server binaries (apt-get install postgresql)")
    need(shutil.which("runuser") is not None, "runuser (util-linux)")
    need(shutil.which("haproxy") is not None, "HAProxy (apt-get install haproxy)")
    pg = PrivatePostgres(free_port())
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


def _ready(client) -> str:
    """The readiness answer's code: "" when ready."""
    try:
        client._request("GET", "/health/ready")
    except ServiceUnavailable as exc:
        return exc.code
    return ""


def test_replicas_ride_out_a_database_restart(private_pg, tmp_path: Path) -> None:
    once = RetryPolicy(max_attempts=0)
    with running_cluster(tmp_path / "c", replicas=2, pg_url=private_pg.url) as c:
        eid = c.stack.endpoints["ep"].endpoint_id
        with c.client() as client, Executor(endpoint_id=eid, client=client) as ex:
            assert [f.result(60) for f in [ex.submit(square, n) for n in range(20)]] == [
                n * n for n in range(20)]
        private_pg.stop()
        for i in range(2):
            with c.client(i, once) as direct:
                assert _ready(direct) == "storage_unavailable"
                with pytest.raises(ServiceUnavailable) as down:
                    direct.list_functions()
                assert down.value.code == "storage_unavailable"
                assert down.value.http_status == 503
        private_pg.start()
        for i in range(2):
            with c.client(i, once) as direct:
                wait_until(lambda d=direct: _ready(d) == "", 60, f"replica {i} to be ready")
        # both replicas serve again, across each other (one holds the link)
        for i in range(2):
            with c.client(i) as client, Executor(endpoint_id=eid, client=client) as ex:
                futures = {ex.submit(square, n): n for n in range(100)}
                for f in as_completed(futures, timeout=120):
                    assert f.result() == futures[f] ** 2
        for r in c.replicas:
            assert r.proc is not None and r.proc.poll() is None  # none died of it
