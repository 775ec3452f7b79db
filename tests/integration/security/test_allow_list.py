"""An endpoint restricted to an allow-list of function ids: refused by the service,
and by the endpoint itself for anything that reaches it anyway."""

from __future__ import annotations

import json
import time

import pytest

from funcx_flows.errors import FunctionNotAllowed, PermissionDenied
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import result_from_record
from funcx_flows.sdk.executor import Executor


def allowed(x):
    return x + 1


def forbidden(x):
    return x - 1


def test_allow_list_is_checked_by_service_and_endpoint(tmp_path):
    stack = LocalStack(tmp_path / "home")
    try:
        stack.start_service()
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
        deadline = time.monotonic() + 60
        while (record := client.get_task(task_id))["state"] not in ("success", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert record["error"]["code"] == "function_not_allowed"
        with pytest.raises(FunctionNotAllowed, match="does not allow function"):
            result_from_record(record)
        client.close()
    finally:
        stack.stop()
