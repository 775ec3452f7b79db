"""The Globus transfer step outside Prefect, against globus-sdk's registered test
responses, and its pure parts: requests, the key store, the fault tracker."""

from __future__ import annotations

import json

import globus_sdk
import pytest
import responses
from globus_sdk.testing import get_last_request, load_response

from funcx_flows.errors import ConfigError, TimedOut, TransferFailed
from funcx_flows.prefect._transfer_watch import FaultTracker
from funcx_flows.prefect.transfer import run_transfer
from funcx_flows.prefect.transfer_keys import KeyStore, TransferRequest

TASK = "00000000-0000-0000-0000-0000699934d5"
BASE = "https://transfer.api.globus.org/v0.10"


@pytest.fixture
def tc(monkeypatch):
    for var in ("GLOBUS_SDK_SERVICE_URL_TRANSFER", "GLOBUS_SDK_ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    responses.start()
    yield globus_sdk.TransferClient()
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
                       label="beamline", client=tc, key="k1", poll_interval_s=0,
                       home=tmp_path)
    assert out == {"task_id": TASK, "status": "SUCCEEDED", "files": 3, "files_transferred": 3,
                   "bytes_transferred": 300}
    body = json.loads(submits()[0].request.body)
    assert body["submission_id"] == "00000000-0000-0000-34af-1252da510f05"
    assert body["label"] == "beamline" and len(body["DATA"]) == 2
    assert body["DATA"][1]["recursive"] is True and body["sync_level"] == 3


def test_a_step_that_could_not_read_its_task_resumes_it_without_resubmitting(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    responses.add(responses.GET, f"{BASE}/task/{TASK}", status=403,
                  json={"code": "PermissionDenied", "message": "not yours"})
    with pytest.raises(TransferFailed, match=r"cannot read Globus transfer .*403"):
        run_transfer("s", "d", [("/a", "/b")], client=tc, key="k2", poll_interval_s=0,
                     home=tmp_path)
    responses.replace(responses.GET, f"{BASE}/task/{TASK}", json=task_doc("SUCCEEDED", 3))
    out = run_transfer("s", "d", [("/a", "/b")], client=tc, key="k2", poll_interval_s=0,
                       home=tmp_path)
    assert out["status"] == "SUCCEEDED"
    assert len(submits()) == 1  # resumed the stored task; nothing resubmitted


def test_failure_carries_globus_message(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    add_task_states(task_doc("FAILED", 1, fatal_error={
        "code": "PERMISSION_DENIED", "description": "permission denied on /scratch"}))
    with pytest.raises(TransferFailed, match="PERMISSION_DENIED: permission denied on /scratch"):
        run_transfer("s", "d", [("/a", "/b")], client=tc, key="k3", poll_interval_s=0,
                     home=tmp_path)


def test_refused_submission_is_a_clear_error(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer, case="failure")
    with pytest.raises(TransferFailed, match=r"Globus refused the transfer: ClientError\.BadRequest"
                                             r"\.NoTransferItems: A transfer requires") as info:
        run_transfer("s", "d", [("/a", "/b")], client=tc, key="k4", poll_interval_s=0,
                     home=tmp_path)
    assert isinstance(info.value.__cause__, globus_sdk.TransferAPIError)  # Globus's own, kept


def test_timeout_cancels_the_transfer(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    responses.add(responses.POST, f"{BASE}/task/{TASK}/cancel",
                  json={"code": "Canceled", "message": "The task has been cancelled."})
    responses.add(responses.GET, f"{BASE}/task/{TASK}", json=task_doc("ACTIVE", 0))
    # (a deadline the submission itself cannot outlast on a loaded machine: at 50 ms
    # the step sometimes ended before it had a submission id, with another message)
    with pytest.raises(TimedOut, match="cancelled it"):
        run_transfer("s", "d", [("/a", "/b")], client=tc, key="k5", poll_interval_s=0.01,
                     timeout_s=0.5, home=tmp_path)
    assert get_last_request().url.endswith(f"/task/{TASK}/cancel")


def test_without_prefect_or_a_key_nothing_is_kept(tc, tmp_path):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer)
    add_task_states(task_doc("SUCCEEDED", 3))
    run_transfer("s", "d", [("/a", "/b")], client=tc, poll_interval_s=0, home=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_options_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        run_transfer("s", "d", [("/a", "/b")], client=globus_sdk.TransferClient(),
                     timeout_s=0, fault_timeout_s=-1, key_ttl_s=0, sync_level="fast", key="",
                     home=tmp_path)
    for name in ("timeout_s", "fault_timeout_s", "key_ttl_s", "sync_level", "key"):
        assert name in str(info.value)
    with pytest.raises(ConfigError, match=r"transfer item 1 is not .*: \('/only-one',\)"):
        TransferRequest.build("s", "d", [("/a", "/b"), ("/only-one",)])


def test_a_request_says_how_it_differs():
    one = TransferRequest.build("s", "d", [("/a", "/b"), ("/c", "/d")], label="x")
    other = TransferRequest.build("s", "e", [("/a", "/b"), ("/c", "/z")], label="x",
                                  sync_level="size")
    assert other.differences(one) == [
        "destination endpoint (was 'd', now 'e')", "sync level (was 'checksum', now 'size')",
        "items (2 before, 2 now; item 1 was ('/c', '/d', False), now ('/c', '/z', False))"]
    assert TransferRequest.from_json(one.as_json()) == one
    assert one.fingerprint() != other.fingerprint()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_key_store_claims_once_moves_on_per_attempt_and_expires(tmp_path):
    clock = Clock()
    request = TransferRequest.build("s", "d", [("/a", "/b")])
    with KeyStore(tmp_path / "keys.sqlite", clock) as store, \
            KeyStore(tmp_path / "keys.sqlite", clock) as other:  # another process
        first = store.claim("k", request, "sub-1", ttl=60)
        assert other.claim("k", request, "sub-2", ttl=60) == first  # the first claim wins
        store.set_task("k", 1, "task-1", ttl=60)
        store.end("k", 1, "timed out", ttl=60)
        second = store.restart("k", 1, "sub-3", ttl=60)
        assert (second.generation, second.submission_id, second.task_id) == (2, "sub-3", None)
        assert other.restart("k", 1, "sub-4", ttl=60) == second  # a stale attempt loses
        store.end("k", 1, "failed", ttl=60)  # and cannot write over the newer one
        assert store.get("k").outcome is None
        clock.now += 59
        store.touch("k", 2, ttl=60)  # watched: kept
        clock.now += 59
        assert store.sweep() == 0
        clock.now += 1
        assert store.sweep() == 1 and store.get("k") is None
    assert (tmp_path / "keys.sqlite").stat().st_mode & 0o077 == 0


def test_fault_tracker_times_a_fault_and_forgets_it_when_cleared():
    tracker = FaultTracker(fault_timeout_s=10)
    ok = {"status": "ACTIVE", "nice_status": "OK"}
    denied = {"status": "ACTIVE", "nice_status": "PERMISSION_DENIED",
              "nice_status_short_description": "Permission denied"}
    assert tracker.observe(ok, 0).fault is None
    change = tracker.observe(denied, 1)
    assert change.fault == "PERMISSION_DENIED" and change.nice_status == ("OK",
                                                                          "PERMISSION_DENIED")
    assert not tracker.persisted(10.9) and tracker.persisted(11)
    cleared = tracker.observe(ok, 5)
    assert cleared.fault is None and cleared.fault_before == "PERMISSION_DENIED"
    assert not tracker.persisted(100)
    assert tracker.last_fault_text == "PERMISSION_DENIED: Permission denied"
    inactive = tracker.observe({"status": "INACTIVE", "nice_status": None}, 6)
    assert inactive.inactive and inactive.fault == "INACTIVE"
    assert tracker.observe({"status": "FAILED", "nice_status": None}, 7).fault is None
