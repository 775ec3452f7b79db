"""The endpoint-manager mode against globus-sdk's own registered responses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import globus_sdk
import pytest
import responses
from globus_sdk.testing import load_response
from globus_sdk.transport import RetryConfig
from waiting import wait_until

from funcx_flows.triggers.config import GlobusTriggerConfig, TargetConfig
from funcx_flows.triggers.globus import GlobusTransferTrigger
from funcx_flows.triggers.state import StateStore

FILES_URL = ("https://transfer.api.globus.org/v0.10/endpoint_manager/task/{}/"
             "successful_transfers")


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in list(os.environ):
        if var.startswith("GLOBUS_SDK_SERVICE_URL") or var == "GLOBUS_SDK_ENVIRONMENT":
            monkeypatch.delenv(var)
    responses.start()
    try:
        yield
    finally:
        responses.stop()
        responses.reset()


def trigger(store: StateStore, dest: str, calls: list) -> GlobusTransferTrigger:
    # the registered task completed in 2024: history, which `since` asks for
    config = GlobusTriggerConfig(name="managed", endpoint_manager=True, destination_endpoint=dest,
                                 path_prefix="/path/to/", since="2024-01-01T00:00:00Z",
                                 target=TargetConfig(flow="unused:f"))
    client = globus_sdk.TransferClient(retry_config=RetryConfig(max_retries=0))
    return GlobusTransferTrigger(config, store, client,
                                 call=lambda task_id, files: calls.append((task_id, files)))


def test_managed_endpoint_tasks_with_paged_file_lists_fire_once(mocked, tmp_path):
    tasks = load_response(globus_sdk.TransferClient.endpoint_manager_task_list)
    dest, task_id = tasks.metadata["destination"], tasks.metadata["task_id"]

    def files_page(request):  # two pages, by marker
        marker = parse_qs(urlparse(request.url).query).get("marker", ["0"])[0]
        second = marker == "2"
        body = {"DATA_TYPE": "successful_transfers", "marker": int(marker),
                "next_marker": None if second else 2,
                "DATA": [{"DATA_TYPE": "successful_transfer", "source_path": "/src/x",
                          "destination_path": "/path/to/b.h5" if second else "/path/to/a.h5"}]}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    responses.add_callback(responses.GET, FILES_URL.format(task_id), callback=files_page)
    store = StateStore(tmp_path / "state.db")
    calls: list = []
    trig = trigger(store, dest, calls)
    trig.start()
    try:
        assert trig.poll() == 1
        assert trig.poll() == 0  # the same task listed again: already seen
        trig.tick()
        assert trig.starter.busy <= 1
    finally:
        trig.stop()
    assert calls == [(task_id, ["/path/to/a.h5", "/path/to/b.h5"])]
    listing = [c.request for c in responses.calls if "task_list" in c.request.url][-1]
    query = parse_qs(urlparse(listing.url).query)
    assert query["filter_endpoint"] == [dest] and query["filter_status"] == ["SUCCEEDED"]
    assert query["filter_endpoint_use"] == ["destination"]  # not transfers leaving it
    assert query["filter_completion_time"][0].endswith(",")
    assert sum("successful_transfers" in c.request.url for c in responses.calls) == 2
    store.close()


def test_a_globus_error_is_reported_and_the_watermark_kept(mocked, tmp_path):
    responses.add(responses.GET,
                  "https://transfer.api.globus.org/v0.10/endpoint_manager/task_list",
                  json={"code": "ServiceUnavailable", "message": "down for maintenance",
                        "request_id": "x"}, status=503)
    store = StateStore(tmp_path / "state.db")
    trig = trigger(store, "85e757b3-0d0d-42e0-91f1-f5f67594bc54", [])
    trig.start()
    try:  # the poll runs on the trigger's own thread; ticks collect its outcome
        wait_until(lambda: trig.tick() or bool(store.get_mark("managed", "problem")),
                   20)
    finally:
        trig.stop()
    assert store.get_mark("managed", "completion_time") is None
    assert "down for maintenance" in (store.get_mark("managed", "problem") or "")
    assert trig._next_poll > trig.clock()  # backing off, not hammering
    store.close()
