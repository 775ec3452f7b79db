"""A result-stream client that was away gets what finished meanwhile; finished
tasks are kept for the retention time, then purged."""

from __future__ import annotations

import threading
import time

from funcx_flows.errors import NotFound
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import result_from_record
from funcx_flows.sdk.stream import ResultStream


def test_offline_client_catches_up_then_results_are_purged(tmp_path):
    stack = LocalStack(tmp_path / "home", env={"FUNCX_FLOWS_RESULT_RETENTION_S": "6"})
    try:
        stack.start_service()
        ep = stack.start_endpoint("ep", {"max_workers_per_node": 2})
        client = stack.client()
        fid = client.register_function(pow)
        batch = client.create_batch(ep.endpoint_id, group_id="away")
        ids = [batch.add(fid, (2, i)) for i in range(50)]
        client.batch_run(batch)
        deadline = time.monotonic() + 60
        while any(r["state"] != "success" for r in client.fetch_tasks(ids)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
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
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get_task(ids[0])
            except NotFound:
                break
            assert time.monotonic() < deadline, "finished tasks were never purged"
            time.sleep(0.2)
        client.close()
    finally:
        stack.stop()
