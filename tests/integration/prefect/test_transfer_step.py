"""The Globus transfer step in real Prefect flows (a real Prefect API) against the
Transfer stand-in: keys, resumption, deadlines on every path, faults, accurate
errors and retries that can help."""

from __future__ import annotations

import _thread
import importlib
import os
import re
import signal
import threading
import time
from typing import Any

import globus_sdk
import pytest
from prefect import flow
from prefectruns import flow_logs, task_runs
from transfer_standin import (
    TransferStandIn,
    active,
    event,
    failed,
    fault,
    inactive,
    succeeded,
)
from waiting import wait_until

from funcx_flows.errors import ConfigError, TimedOut, TransferFailed, TransferStatusUnknown
from funcx_flows.prefect.transfer import run_transfer, transfer
from funcx_flows.prefect.transfer_keys import KeyStore
from funcx_flows.retry import RetryPolicy

pytestmark = pytest.mark.prefect
# the package's ``transfer`` attribute is the task; the module is needed for its constants
transfer_mod = importlib.import_module("funcx_flows.prefect.transfer")

ITEMS = [["/detector/f1.h5", "/scratch/f1.h5"], ["/detector/f2.h5", "/scratch/f2.h5"]]


@flow(name="move-frames")
def move(url: str, items: list[list[str]], options: dict[str, Any],
         retries: int = 0) -> dict[str, Any]:
    step = transfer.with_options(retries=retries, retry_delay_seconds=0)
    return step("src-collection", "dst-collection", [tuple(i) for i in items],
                client=globus_sdk.TransferClient(base_url=url), poll_interval_s=0.02, **options)


def run(url: str, items: list[list[str]] = ITEMS, retries: int = 0,
        **options: Any) -> tuple[Any, Any, list[str]]:
    """(result or exception, the flow run's state, its log messages)."""
    state = move(url, items, options, retries, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    return state.result(raise_on_failure=False), flow_run_id, flow_logs(flow_run_id)


def logged(logs: list[str], pattern: str) -> list[str]:
    return [m for m in logs if re.search(pattern, m)]


@pytest.fixture
def standin(home, monkeypatch):
    monkeypatch.setattr(transfer_mod, "RETRY_POLICY", RetryPolicy(initial=0.02, max_delay=0.2))
    s = TransferStandIn()
    with s.running():
        yield s


def test_every_fault_and_inactive_is_logged_with_its_events(prefect_server, standin):
    denied = event("PERMISSION_DENIED", "Permission denied",
                   "Error (transfer)\nServer: dtn01\nFile: /scratch/f1.h5\n"
                   "500 Command failed. : Path not allowed.")
    standin.plan(active(nice_status="Queued", nice_status_short_description="Queued"),
                 active(), fault("PERMISSION_DENIED", "Permission denied",
                                 "Path not allowed on the destination", events=[denied]),
                 fault("PERMISSION_DENIED", "Permission denied", "Path not allowed"),
                 active(1), inactive("Credentials expired",
                                     events=[event("AUTH", "Credentials for dtn01 expired")]),
                 active(1), succeeded())
    result, _, logs = run(standin.url)
    assert result["status"] == "SUCCEEDED" and result["files_transferred"] == 2
    faults = logged(logs, r"fault PERMISSION_DENIED: Permission denied: Path not allowed")
    assert len(faults) == 1  # logged when it appears, not at every poll
    assert logged(logs, r"event PERMISSION_DENIED .*Permission denied; Error \(transfer\) "
                        r"Server: dtn01 File: /scratch/f1.h5 500 Command failed")
    assert logged(logs, r"fault PERMISSION_DENIED cleared \(nice_status now OK\)")
    assert logged(logs, r"is INACTIVE \(it waits until someone acts\): INACTIVE: "
                        r"Credentials expired")
    assert logged(logs, r"event AUTH .*Credentials for dtn01 expired")
    assert logged(logs, r"fault INACTIVE cleared")
    assert logged(logs, r"nice_status Queued -> OK")


@pytest.mark.parametrize("limit", ["fault_timeout_s", "timeout_s"])
def test_a_persistent_fault_fails_the_step_or_names_itself_at_the_deadline(
        prefect_server, standin, limit):
    standin.plan(active(), fault("PERMISSION_DENIED", "Permission denied",
                                 "Path not allowed on /scratch",
                                 events=[event("PERMISSION_DENIED", "Permission denied")]))
    result, _, logs = run(standin.url, **{limit: 0.5})
    task = standin.created()[0]
    assert task.cancelled  # stuck transfers are not left running
    if limit == "fault_timeout_s":
        assert isinstance(result, TransferFailed) and not isinstance(result, TimedOut)
        assert "stuck on PERMISSION_DENIED: Permission denied: Path not allowed on /scratch" \
            in str(result)
        assert result.details["fault"] == "PERMISSION_DENIED"
    else:
        assert isinstance(result, TimedOut)
        assert "last fault seen: PERMISSION_DENIED: Permission denied" in str(result)
    assert "cancelled it" in str(result)
    assert logged(logs, r"cancelled Globus transfer")


BUSY = {
    "5xx on every poll": dict(method="GET", path=r"/task/[^/]+$", status=502),
    "429 with Retry-After": dict(method="GET", path=r"/task/[^/]+$", status=429,
                                 code="RequestLimitExceeded", retry_after=1),
    "network errors": dict(method="GET", path=r"/task/[^/]+$", drop=True),
    "answers held back": dict(method="GET", path=r"/task/[^/]+$", hold=True),
    "5xx on submission": dict(method="POST", path=r"/transfer$", status=503),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(BUSY))
def test_the_deadline_holds_whatever_globus_answers(prefect_server, standin, case):
    standin.plan(active())  # would run forever
    standin.inject(**BUSY[case])
    result, flow_run_id, logs = run(standin.url, timeout_s=1)
    held_at_end = standin.held
    assert isinstance(result, TimedOut), result
    [task_run] = task_runs(flow_run_id)
    assert task_run.state.name == "TimedOut"  # Prefect's own record of it
    if case == "answers held back":
        assert held_at_end > 0  # the step did not wait for Globus's answer
        assert "last answer: network error: GlobusTimeoutError" in str(result)
    else:
        assert logged(logs, r"Globus busy or unreachable while trying to (read|submit)")
    if case == "5xx on submission":
        assert "status is unknown" in str(result) and "nothing to cancel" in str(result)
        assert "503" in str(result)
        return
    assert standin.created()[0].cancelled
    assert "cancelled it" in str(result)
    if "status" in BUSY[case]:
        assert f"Globus's last answer: {BUSY[case]['status']} " in str(result)


def test_a_5xx_after_the_task_was_made_resumes_it(prefect_server, standin):
    standin.inject("POST", r"/transfer$", status=502, code="ExternalError",
                   message="Error contacting the endpoint", after=True, times=1)
    result, _, logs = run(standin.url)
    assert result["status"] == "SUCCEEDED"
    [task] = standin.created()  # one transfer, found again by its submission id
    assert result["task_id"] == task.task_id
    assert standin.answers("POST", r"/transfer$") == [502, 200]  # 200: Duplicate
    assert logged(logs, rf"Globus already had submission {task.submission_id}")
    assert not logged(logs, "refused")


def test_status_unknown_is_not_a_refusal_and_a_rerun_resumes(prefect_server, standin,
                                                              monkeypatch):
    monkeypatch.setattr(transfer_mod, "SUBMIT_ATTEMPTS", 3)
    standin.inject("POST", r"/transfer$", status=502, code="ExternalError",
                   message="Error contacting the endpoint", after=True)
    result, _, _ = run(standin.url, key="run-42")
    assert isinstance(result, TransferStatusUnknown) and not isinstance(result, TransferFailed)
    assert "status is unknown" in str(result) and "refused" not in str(result)
    assert "3 tries answered 502 ExternalError" in str(result)
    [task] = standin.created()
    standin.clear_injections()
    result, _, logs = run(standin.url, key="run-42")
    assert result["task_id"] == task.task_id and len(standin.created()) == 1
    assert logged(logs, r"submitting with the stored submission id")


def test_a_refused_submission_says_so(prefect_server, standin):
    standin.inject("POST", r"/transfer$", status=409, code="ClientError.Conflict",
                   message="the destination collection is paused")
    result, _, _ = run(standin.url)
    assert isinstance(result, TransferFailed)
    assert str(result) == ("Globus refused the transfer: ClientError.Conflict: the destination "
                           "collection is paused")
    assert standin.created() == []


@pytest.mark.parametrize("how", ["timed out", "cancelled in Globus", "fresh_on_retry=False"])
def test_a_retry_after_a_timeout_or_cancellation_submits_a_fresh_transfer(
        prefect_server, standin, how):
    if how == "cancelled in Globus":
        standin.plan(active(), failed("CANCELED", "The task was canceled by an administrator"))
        options: dict[str, Any] = {}
    else:
        standin.plan(active())  # runs until the step's deadline cancels it
        options = {"timeout_s": 0.5}
    standin.plan(active(1), succeeded())
    if how == "fresh_on_retry=False":
        options["fresh_on_retry"] = False
    result, _, logs = run(standin.url, retries=1, **options)
    tasks = standin.created()
    if how == "fresh_on_retry=False":  # the retry re-attached to the cancelled transfer
        assert isinstance(result, TransferFailed) and "CANCELED" in str(result)
        assert len(tasks) == 1
        return
    assert result["status"] == "SUCCEEDED", result
    assert [t.task_id for t in tasks][1] == result["task_id"] and len(tasks) == 2
    assert tasks[0].submission_id != tasks[1].submission_id  # a new key for the new attempt
    assert tasks[0].doc["status"] == "FAILED"
    assert logged(logs, rf"attempt 2 of this task's key: the earlier Globus transfer "
                        rf"{tasks[0].task_id} (timed out|failed); submitting a fresh one")


def test_a_retry_cancels_an_earlier_transfer_that_still_runs_and_says_so(prefect_server,
                                                                         standin):
    standin.plan(active())
    standin.plan(active(1), succeeded())
    standin.inject("POST", r"/cancel$", status=409, code="ClientError.Conflict",
                   message="cannot cancel now", times=1)  # the cancel at the deadline fails
    result, _, logs = run(standin.url, retries=1, timeout_s=0.5)
    first, second = standin.created()
    assert result["task_id"] == second.task_id
    assert first.cancelled  # by the retry, before it submitted the second transfer
    order = [(m, p) for m, p, _ in standin.log if p.endswith(("/cancel", "/transfer"))]
    assert order.index(("POST", f"/v0.10/task/{first.task_id}/cancel")) < \
        len(order) - 1 - order[::-1].index(("POST", "/v0.10/transfer"))
    assert logged(logs, rf"could not cancel Globus transfer {first.task_id}")
    assert logged(logs, rf"cancelled the earlier Globus transfer {first.task_id}, still "
                        rf"ACTIVE, before starting a new one")


def test_a_key_names_one_transfer(prefect_server, standin):
    first, _, _ = run(standin.url, key="nightly-2026-11-23")
    again, _, logs = run(standin.url, key="nightly-2026-11-23")  # another flow run resumes
    assert again == first and len(standin.created()) == 1
    assert logged(logs, r"already succeeded; not submitting again")
    other, _, _ = run(standin.url, items=ITEMS[:1], key="nightly-2026-11-23")
    assert isinstance(other, ConfigError)
    assert "key 'nightly-2026-11-23' belongs to a different transfer: items (2 before, 1 now" \
        in str(other)
    assert len(standin.created()) == 1  # refused before anything was submitted


def test_two_transfers_in_one_flow_run_have_their_own_default_keys(prefect_server, standin):
    @flow(name="two-moves")
    def two(url: str) -> list[str]:
        client = globus_sdk.TransferClient(base_url=url)
        a = transfer("src", "dst", [("/a", "/a")], client=client, poll_interval_s=0.02)
        b = transfer("src", "dst", [("/b", "/b")], client=client, poll_interval_s=0.02)
        return [a["task_id"], b["task_id"]]

    ids = two(standin.url)
    assert len(set(ids)) == 2 and len(standin.created()) == 2


def test_keys_expire_and_their_state_is_swept(prefect_server, standin, home):
    legacy = home / "transfers"  # an older release kept one file per task run, forever
    legacy.mkdir()
    (legacy / "0198c0de-task-run.json").write_text('{"submission_id": "x"}')
    os.utime(legacy / "0198c0de-task-run.json", (time.time() - 2, time.time() - 2))
    first, _, _ = run(standin.url, key="short-lived", key_ttl_s=1)
    assert not legacy.exists()
    with KeyStore.at_home(home) as store:
        record = store.get("key:short-lived")
        assert record is not None and record.outcome == "succeeded"
        wait_until(lambda: store.clock() >= record.expires_at, 10, "the key's time to run out")
    run(standin.url, key="another")
    with KeyStore.at_home(home) as store:  # swept by a step run for another key
        assert store.get("key:short-lived") is None
        assert [r[0] for r in store._db.execute("SELECT key FROM transfer_keys")] == [
            "key:another"]
    changed, _, _ = run(standin.url, items=ITEMS[:1], key="short-lived")
    assert changed["task_id"] != first["task_id"]  # expired: free for another transfer
    assert sorted(p.name for p in home.iterdir()) == ["transfer_keys.sqlite"]


def test_an_interrupted_step_cancels_its_transfer_and_the_next_run_starts_afresh(standin, home):
    standin.plan(active())
    standin.plan(active(), succeeded())

    def interrupt_when_polled() -> None:
        standin.wait_for(lambda: any(t.polls >= 2 for t in standin.tasks.values()))
        _thread.interrupt_main()  # as Ctrl-C (or Prefect's alarm) does to a waiting step

    # Ctrl-C's own handler, whatever an earlier test left (interrupt_main only calls
    # the handler: with another one installed, no KeyboardInterrupt would come)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_when_polled, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_transfer("src", "dst", [("/a", "/b")], client=standin.client(), key="k",
                         poll_interval_s=0.02, home=home)
    finally:
        signal.signal(signal.SIGINT, previous)
    [first] = standin.created()
    assert first.cancelled
    again = run_transfer("src", "dst", [("/a", "/b")], client=standin.client(), key="k",
                         poll_interval_s=0.02, home=home)
    first, second = standin.created()
    assert again["task_id"] == second.task_id != first.task_id
