"""A shared endpoint runs another user's tasks; a shared function runs for its
grantee; unsharing closes both at once. Real service, real endpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest

from funcx_flows.errors import NotFound, PermissionDenied
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import Client
from funcx_flows.sdk.executor import Executor


def calibrate(x):
    return x * 2.5


def test_a_shared_endpoint_and_function_work_for_the_grantee_only(tmp_path):
    stack = LocalStack(tmp_path / "home")
    try:
        url = stack.start_service()
        ep = stack.start_endpoint("beamline", {"max_workers_per_node": 1})
        alice = stack.client()
        made = subprocess.run([sys.executable, "-c", "from funcx_flows.cli import main; main()",
                               "token", "create", "--user", "bob"], env=stack.env,
                              capture_output=True, text=True, timeout=60, check=True)
        bob = Client(url, made.stdout.strip().splitlines()[-1])
        fid = alice.register_function(calibrate)

        with Executor(endpoint_id=ep.endpoint_id, client=bob) as ex, \
                pytest.raises(NotFound, match="endpoint"):
            ex.submit(abs, -3).result(timeout=60)

        alice.share("endpoint", ep.endpoint_id, users=["bob"])
        alice.share("function", fid, public=True)
        assert [e["endpoint_id"] for e in bob.list_endpoints(shared=True)] == [ep.endpoint_id]
        with Executor(endpoint_id=ep.endpoint_id, client=bob) as ex:
            assert ex.submit(abs, -3).result(timeout=60) == 3  # bob's own function
            task_id = bob.run(fid, 4, endpoint_id=ep.endpoint_id)  # alice's, shared
        with pytest.raises(PermissionDenied):
            bob.share("endpoint", ep.endpoint_id, public=True)
        assert _wait_result(bob, task_id) == 10.0
        with pytest.raises(NotFound):
            alice.get_task(task_id)  # bob's tasks stay bob's

        alice.share("endpoint", ep.endpoint_id)
        assert alice.get_sharing("endpoint", ep.endpoint_id) == {
            "public": False, "users": [], "groups": []}
        with pytest.raises(NotFound):
            bob.run(fid, 4, endpoint_id=ep.endpoint_id)
        alice.close()
        bob.close()
    finally:
        stack.stop()


def _wait_result(client: Client, task_id: str) -> object:
    import time

    from funcx_flows.errors import TaskPending

    deadline = time.monotonic() + 60
    while True:
        try:
            return client.get_result(task_id)
        except TaskPending:
            assert time.monotonic() < deadline
            time.sleep(0.05)
