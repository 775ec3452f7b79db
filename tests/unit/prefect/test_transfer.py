"""The Globus transfer step against globus-sdk's registered test responses."""

from __future__ import annotations

import json

import globus_sdk
import pytest
import responses
from globus_sdk.testing import get_last_request, load_response
from globus_sdk.transport import RetryConfig

from funcx_flows.errors import TransferFailed
from funcx_flows.prefect.transfer import run_transfer

TASK = "00000000-0000-0000-0000-0000699934d5"
BASE = "https://transfer.api.globus.org/v0.10"


@pytest.fixture
def tc(monkeypatch):
    for var in ("GLOBUS_SDK_SERVICE_URL_TRANSFER", "GLOBUS_SDK_ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    responses.start()
    yield globus_sdk.TransferClient(retry_config=RetryConfig(max_retries=0))
    responses.stop()
    responses.reset()


def task_doc(status, done=0, total=3, **extra):
    return {"DATA_TYPE": "task", "task_id": TASK, "status": status, "files": total,
            "files_transferred": done, "bytes_transferred": done * 100, **extra}


def add_task_states(*docs):
    for doc in docs:
        responses.add(responses.GET, f"{BASE}/task/{TASK}", json=doc)


def submits():
    return [c for c in responses.calls if c.request.url.endswith("/transfer")]


def test_submit_wait_and_succeed(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    add_task_states(task_doc("ACTIVE", 1), task_doc("ACTIVE", 2), task_doc("SUCCEEDED", 3))
    out = run_transfer("src-ep", "dst-ep", [("/data/a.h5", "/scratch/a.h5"),
                                            {"source": "/data/run/", "destination": "/s/run/",
                                             "recursive": True}],
                       label="beamline", client=tc, submission_key="k1", poll_interval_s=0,
                       home=tmp_path)
    assert out == {"task_id": TASK, "status": "SUCCEEDED", "files": 3, "files_transferred": 3,
                   "bytes_transferred": 300}
    body = json.loads(submits()[0].request.body)
    assert body["submission_id"] == "00000000-0000-0000-34af-1252da510f05"
    assert body["label"] == "beamline" and len(body["DATA"]) == 2
    assert body["DATA"][1]["recursive"] is True


def test_a_retried_step_never_submits_twice(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    responses.add(responses.GET, f"{BASE}/task/{TASK}", status=500,
                  json={"code": "ServerError", "message": "boom"})
    with pytest.raises(TransferFailed):
        run_transfer("s", "d", [("/a", "/b")], client=tc, submission_key="k2",
                     poll_interval_s=0, home=tmp_path)
    assert len(submits()) == 1
    add_task_states(task_doc("SUCCEEDED", 3))
    responses.replace(responses.GET, f"{BASE}/task/{TASK}", json=task_doc("SUCCEEDED", 3))
    out = run_transfer("s", "d", [("/a", "/b")], client=tc, submission_key="k2",
                       poll_interval_s=0, home=tmp_path)
    assert out["status"] == "SUCCEEDED"
    assert len(submits()) == 1  # resumed the stored task; nothing resubmitted


def test_failure_carries_globus_message(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    add_task_states(task_doc("FAILED", 1, fatal_error={
        "code": "PERMISSION_DENIED", "description": "permission denied on /scratch"}))
    with pytest.raises(TransferFailed, match="PERMISSION_DENIED: permission denied on /scratch"):
        run_transfer("s", "d", [("/a", "/b")], client=tc, submission_key="k3",
                     poll_interval_s=0, home=tmp_path)


def test_refused_submission_is_a_clear_error(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    responses.add(responses.POST, f"{BASE}/transfer", status=409,
                  json={"code": "ClientError.Conflict", "message": "endpoint is paused",
                        "request_id": "x", "resource": "/transfer"})
    with pytest.raises(TransferFailed, match="endpoint is paused"):
        run_transfer("s", "d", [("/a", "/b")], client=tc, submission_key="k4",
                     poll_interval_s=0, home=tmp_path)


def test_timeout_cancels_the_transfer(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    responses.add(responses.POST, f"{BASE}/task/{TASK}/cancel",
                  json={"code": "Canceled", "message": "The task has been cancelled."})
    responses.add(responses.GET, f"{BASE}/task/{TASK}", json=task_doc("ACTIVE", 0))
    with pytest.raises(TimeoutError, match="cancelled"):
        run_transfer("s", "d", [("/a", "/b")], client=tc, submission_key="k5",
                     poll_interval_s=0.01, timeout_s=0.05, home=tmp_path)
    assert get_last_request().url.endswith(f"/task/{TASK}/cancel")
