"""The service's result-size limit holds on its endpoints, whatever they were
started with: the service states it in Welcome, the agent applies it."""

from __future__ import annotations

import pytest

from funcx_flows.errors import ResultTooLarge
from funcx_flows.sdk.executor import Executor

LIMIT = 100_000


def blob(n: int) -> bytes:
    return b"x" * n


def test_a_result_over_the_service_limit_fails_naming_it(make_stack):
    stack = make_stack(env={"FUNCX_FLOWS_MAX_RESULT_BYTES": str(LIMIT)})
    ep = stack.start_endpoint("ep", {"max_workers_per_node": 1})
    client = stack.client()
    with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
        assert len(ex.submit(blob, LIMIT // 2).result(timeout=60)) == LIMIT // 2
        with pytest.raises(ResultTooLarge, match=f"limit is {LIMIT}"):
            ex.submit(blob, 2 * LIMIT).result(timeout=60)
        assert ex.submit(blob, 10).result(timeout=60) == b"x" * 10  # the worker lives on
    client.close()
