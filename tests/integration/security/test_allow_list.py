"""An endpoint restricted to an allow-list of function ids: refused by the service,
and by the endpoint itself for anything that reaches it anyway."""

from __future__ import annotations

import json

import pytest
from waiting import finished_task

from funcx_flows.errors import FunctionNotAllowed, PermissionDenied
from funcx_flows.sdk.client import result_from_record
from funcx_flows.sdk.executor import Executor


def allowed(x):
    return x + 1


def forbidden(x):
    return x - 1


def test_allow_list_is_checked_by_service_and_endpoint(make_stack):
    stack = make_stack()
    client = stack.client()
    ok_id = client.register_function(allowed)
    bad_id = client.register_function(forbidden)
    ep = stack.start_endpoint("guarded", {"max_workers_per_node": 1,
                                          "allowed_functions": [ok_id]})
    with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
        assert ex.submit(allowed, 1).result(timeout=60) == 2
        with pytest.raises(PermissionDenied, match="does not allow function"):
            ex.submit(forbidden, 1).result(timeout=60)
    # the service forgets the list (a re-registration without it): the endpoint
    # still refuses on its own
    keys = json.loads((ep.folder / "curve.json").read_text())
    client.register_endpoint("guarded", keys["public"], {})
    (task_id,) = client.run(bad_id, 5, endpoint_id=ep.endpoint_id),
    record = finished_task(client, task_id)
    assert record["error"]["code"] == "function_not_allowed"
    with pytest.raises(FunctionNotAllowed, match="does not allow function"):
        result_from_record(record)
    client.close()
