"""Globus Compute's call shapes on our Client, against a real service and endpoint:
run(*args, endpoint_id=, function_id=), create_batch() with batch.add(function_id,
args=, kwargs=) or a function, batch_run(endpoint_id, batch), get_batch_result and
Executor(endpoint_id=); and the mixed or wrong shapes refused at once with the call
that was meant, nothing registered or sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stacks import running
from waiting import wait_until

from funcx_flows import Executor
from funcx_flows.localstack import RunningEndpoint
from funcx_flows.sdk.batch import Batch
from funcx_flows.sdk.client import Client


def square(x: int, plus: int = 0) -> int:
    return x * x + plus


def fails(x: int) -> None:
    raise ValueError(f"cannot handle {x}")


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, RunningEndpoint]]:
    with running(Path(tmp_path_factory.mktemp("shapes")) / "home") as stack:
        ep = stack.start_endpoint("ep", {"max_workers_per_node": 2})
        with stack.client() as client:
            yield client, ep


def finished(client: Client, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    def done() -> dict[str, dict[str, Any]] | None:
        states: dict[str, dict[str, Any]] = client.get_batch_result(task_ids)
        if len(states) == len(task_ids) and not any(s["pending"] for s in states.values()):
            return states
        return None

    return wait_until(done, 60, f"tasks {task_ids} to finish", interval=0.1)


def test_globus_compute_shapes_run_on_our_endpoint(ours):
    client, ep = ours
    fid = client.register_function(square)
    one = client.run(3, endpoint_id=ep.endpoint_id, function_id=fid)
    named = client.run(4, endpoint_id="ep", function_id=fid, plus=1)  # by name too
    ours_shape = client.run(square, 5, endpoint_id="ep")

    batch = client.create_batch()  # the endpoint comes with batch_run, as there
    batch.add(fid, args=(6,))
    batch.add(fid, args=[7], kwargs={"plus": 2})
    batch.add(square, (8,))  # a function object: registered through the client
    batch.add(client.register_function(fails), args=(9,))
    answer = client.batch_run(ep.endpoint_id, batch)
    assert answer["endpoint_id"] == ep.endpoint_id and set(answer) >= {"request_id",
                                                                       "task_group_id"}
    assert len(answer["tasks"][fid]) == 3  # square's id once: registration is by content
    failing_id = next(f for f in answer["tasks"] if f != fid)

    ids = [one, named, ours_shape, *answer["tasks"][fid], *answer["tasks"][failing_id]]
    states = finished(client, ids)
    assert [states[t].get("result") for t in ids[:6]] == [9, 17, 25, 36, 51, 64]
    assert all(states[t]["status"] == "success" and states[t]["completion_t"] != "unknown"
               for t in ids[:6])
    bad = states[ids[6]]
    assert bad["status"] == "failed" and isinstance(bad["exception"], ValueError)
    assert client.get_result(one) == 9

    group = "7d1f6e0a-4b43-4f4e-9a55-5c3a3f2a0b19"
    with Executor(endpoint_id=ep.endpoint_id, client=client, task_group_id=group,
                  resource_specification={"cores": 1}) as ex:
        future = ex.submit(square, 10)
        assert future.result(timeout=60) == 100
    record = client.get_task(future.task_id)
    assert record["group_id"] == group
    with pytest.raises(ValueError, match="not both"):
        Executor(endpoint_id=ep.endpoint_id, client=client, resources={"cores": 1},
                 resource_specification={"cores": 2})


def test_wrong_and_mixed_shapes_are_refused_before_anything_is_sent(ours):
    client, ep = ours
    fid = client.register_function(square)
    before = len(client.list_functions())
    with pytest.raises(TypeError, match=r"function_id=\.\.\.\)"):
        client.run(3, endpoint_id="ep")  # Globus Compute's shape without function_id
    with pytest.raises(TypeError, match="got a function and function_id="):
        client.run(square, 3, endpoint_id="ep", function_id=fid)
    with pytest.raises(TypeError, match="not int 3"):
        client.register_function(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs the function"):
        client.run(endpoint_id="ep")
    with pytest.raises(TypeError, match=r"is not a function id"):
        client.run(2, endpoint_id="ep", function_id="not-a-uuid")
    assert len(client.list_functions()) == before  # nothing registered

    batch = client.create_batch()
    with pytest.raises(TypeError, match=r"args=\(5,\)"):
        batch.add(fid, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str keys"):
        batch.add(fid, (1,), {1: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="not a function id"):
        batch.add(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"register_function\(fn\)"):
        Batch().add(square)  # a batch without a client cannot register
    with pytest.raises(ValueError, match="no tasks in the batch"):
        client.batch_run(ep.endpoint_id, batch)
    batch.add(fid, (1,))
    with pytest.raises(TypeError, match=r"\(endpoint_id, batch\)"):
        client.batch_run(batch, ep.endpoint_id)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="names no endpoint"):
        client.batch_run(batch)
    with pytest.raises(TypeError, match="not both"):
        client.create_batch("ep", "g1", task_group_id="g2")
