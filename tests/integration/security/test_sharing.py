"""A shared endpoint runs another user's tasks; a shared function runs for its
grantee; unsharing closes both at once. Real service, real endpoint."""

from __future__ import annotations

import pytest
from stacks import user_client
from waiting import finished_task

from funcx_flows.errors import NotFound, PermissionDenied
from funcx_flows.sdk.client import Client
from funcx_flows.sdk.executor import Executor


def calibrate(x):
    return x * 2.5


def test_a_shared_endpoint_and_function_work_for_the_grantee_only(make_stack):
    stack = make_stack()
    ep = stack.start_endpoint("beamline", {"max_workers_per_node": 1})
    alice = stack.client()
    bob = user_client(stack, "bob")
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


def _wait_result(client: Client, task_id: str) -> object:
    finished_task(client, task_id)
    return client.get_result(task_id)
