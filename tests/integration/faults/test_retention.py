"""A result-stream client that was away gets what finished meanwhile; finished
tasks are kept for the retention time, then purged."""

from __future__ import annotations

import threading

from waiting import wait_until

from funcx_flows.errors import NotFound
from funcx_flows.sdk.client import result_from_record
from funcx_flows.sdk.stream import ResultStream


def test_offline_client_catches_up_then_results_are_purged(make_stack):
    stack = make_stack(env={"FUNCX_FLOWS_RESULT_RETENTION_S": "6"})
    ep = stack.start_endpoint("ep", {"max_workers_per_node": 2})
    client = stack.client()
    fid = client.register_function(pow)
    batch = client.create_batch(ep.endpoint_id, group_id="away")
    ids = [batch.add(fid, (2, i)) for i in range(50)]
    client.batch_run(batch)
    wait_until(lambda: all(r["state"] == "success" for r in client.fetch_tasks(ids)), 60,
               "the batch to succeed")
    # nobody listened while they ran; a stream opened now receives all of them
    got: dict[str, int] = {}
    done = threading.Event()

    def collect(records):
        for r in records:
            got[r["task_id"]] = result_from_record(r)
        if len(got) >= len(ids):
            done.set()

    stream = ResultStream(client.websocket_url, client.token, collect, group_id="away")
    stream.start()
    assert done.wait(30)
    stream.close()
    assert got == {t: 2 ** i for i, t in enumerate(ids)}
    # past the retention the records are gone

    def purged() -> bool:
        try:
            client.get_task(ids[0])
        except NotFound:
            return True
        return False

    wait_until(purged, 30, "finished tasks to be purged", interval=0.2)
    client.close()
