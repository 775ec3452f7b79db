"""``transfer``: a Globus transfer as a Prefect task that survives crashes and retries.

Each transfer has a *key* (``transfer_keys``): by default the flow run, the task
and the request, so a rerun of the same flow run re-attaches to the transfer a
crashed run started; or a key the user passes, which resumes across flow runs.
The submission id is stored under the key before submitting, so no crash or
failed answer can start a second transfer. The wait logs progress and every
fault Globus shows; it ends at the deadline on every path (busy answers,
network errors, faults), cancelling the transfer. A retry after a transfer
ended badly (timed out, cancelled, failed) starts a fresh one; one that finds
an earlier transfer still running cancels it first and says so.

    step run --key--> record? --no------------------> submit (stored id) --+
                        |--live: re-attach ---------------------------------+--> watch
                        |--ended badly: cancel if live, new attempt, submit-+      |
                        `--succeeded: return its summary         end: record it <--+

(One module of about 400 lines: the path above and the deadline kept on each of
its branches read as one; the keys and their records are ``transfer_keys``.)
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import globus_sdk
from prefect import task
from prefect.cache_policies import NO_CACHE

from funcx_flows.errors import (
    ConfigError,
    FuncxFlowsError,
    TimedOut,
    TransferFailed,
    TransferStatusUnknown,
)
from funcx_flows.home import home_dir
from funcx_flows.prefect._globus_calls import (
    Deadline,
    DeadlinePassed,
    GlobusCalls,
    Logger,
    describe,
    retryable,
)
from funcx_flows.prefect._remote import _run_logger
from funcx_flows.prefect._transfer_watch import LIVE, FaultPersisted, FaultTracker, watch
from funcx_flows.prefect.transfer_keys import (
    KeyStore,
    Record,
    TransferRequest,
    sweep_legacy,
)
from funcx_flows.retry import RetryPolicy

CLIENT_ID_ENV = "FUNCX_FLOWS_GLOBUS_CLIENT_ID"
CLIENT_SECRET_ENV = "FUNCX_FLOWS_GLOBUS_CLIENT_SECRET"
KEY_TTL_S = 24 * 3600.0  # how long a key is kept after the step last saw its transfer
CANCEL_GRACE_S = 10.0  # how long a cancel may take once the deadline has passed
SUBMIT_ATTEMPTS = 8  # without a deadline: tries of a submission Globus keeps failing
SYNC_LEVELS = (None, "exists", "size", "mtime", "checksum")
RETRY_POLICY = RetryPolicy(initial=0.5, max_delay=30.0)  # asking again while Globus is busy
SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, FAULT, REFUSED = (
    "succeeded", "failed", "timed out", "cancelled", "stuck on a fault", "refused")


def transfer_client_from_env() -> globus_sdk.TransferClient:
    """A TransferClient for a confidential client (service account) given by the environment."""
    client_id, secret = os.environ.get(CLIENT_ID_ENV), os.environ.get(CLIENT_SECRET_ENV)
    if not client_id or not secret:
        raise ConfigError(f"no Globus credentials: pass client= or set {CLIENT_ID_ENV} and "
                          f"{CLIENT_SECRET_ENV} (a confidential client)")
    auth = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
    authorizer = globus_sdk.ClientCredentialsAuthorizer(
        auth, scopes=globus_sdk.TransferClient.scopes.all)
    return globus_sdk.TransferClient(authorizer=authorizer)


@dataclass(frozen=True)
class _RunContext:
    """Where the step runs: the Prefect task run's default key and timeout, if any."""

    flow_run_id: str | None = None
    task_key: str | None = None
    task_run_id: str | None = None
    timeout_s: float | None = None

    @classmethod
    def current(cls) -> _RunContext:
        try:
            from prefect.context import TaskRunContext
        except ImportError:
            return cls()
        ctx = TaskRunContext.get()
        if ctx is None:
            return cls()
        run = ctx.task_run
        return cls(None if run.flow_run_id is None else str(run.flow_run_id), run.task_key,
                   str(run.id), ctx.task.timeout_seconds)

    def step_timeout_s(self) -> float | None:
        """The task's ``timeout_seconds``, less time to cancel the transfer before Prefect
        interrupts the step."""
        if self.timeout_s is None:
            return None
        return self.timeout_s - min(CANCEL_GRACE_S, 0.1 * self.timeout_s)

    def default_key(self, request: TransferRequest) -> str | None:
        """The flow run, the task and what it moves: the same in a rerun of the flow run."""
        fingerprint = request.fingerprint()[:16]
        if self.flow_run_id is not None:
            return f"flow-run:{self.flow_run_id}:{self.task_key}:{fingerprint}"
        if self.task_run_id is not None:  # a task run outside a flow: its own retries only
            return f"task-run:{self.task_run_id}:{fingerprint}"
        return None


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s"


def _check(poll_interval_s: float, timeout_s: float | None, fault_timeout_s: float | None,
           key_ttl_s: float, key: str | None, sync_level: str | None) -> None:
    bad = []
    if poll_interval_s < 0:
        bad.append(f"poll_interval_s must be >= 0 (got {poll_interval_s})")
    if timeout_s is not None and timeout_s <= 0:
        bad.append(f"timeout_s must be > 0 or None (got {timeout_s})")
    if fault_timeout_s is not None and fault_timeout_s < 0:
        bad.append(f"fault_timeout_s must be >= 0 or None (got {fault_timeout_s})")
    if sync_level not in SYNC_LEVELS:
        bad.append(f"sync_level must be one of {SYNC_LEVELS} (got {sync_level!r})")
    if key_ttl_s <= 0:
        bad.append(f"key_ttl_s must be > 0 (got {key_ttl_s})")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        bad.append(f"key must be a non-empty string (got {key!r})")
    if bad:
        raise ConfigError("transfer: " + "; ".join(bad))


class _Step:
    """One run of the step for one key: decide, submit or re-attach, watch, record."""

    def __init__(self, calls: GlobusCalls, store: KeyStore, key: str, shown_key: str,
                 request: TransferRequest, logger: Logger, deadline: Deadline, *,
                 poll_interval_s: float, fault_timeout_s: float | None, fresh_on_retry: bool,
                 key_ttl_s: float) -> None:
        self.calls, self.store, self.key, self.shown = calls, store, key, shown_key
        self.request, self.logger, self.deadline = request, logger, deadline
        self.poll_interval_s, self.fault_timeout_s = poll_interval_s, fault_timeout_s
        self.fresh_on_retry, self.ttl = fresh_on_retry, key_ttl_s

    def run(self) -> dict[str, Any]:
        record = self._prepare()
        if record.outcome == SUCCEEDED and record.summary is not None:
            self.logger.info("Globus transfer %s (%s) already succeeded; not submitting again",
                             record.task_id, self.shown)
            return record.summary
        task_id = record.task_id or self._submit(record)
        return self._follow(record.generation, task_id)

    # -- deciding what this run does with its key ------------------------------------

    def _prepare(self) -> Record:
        record = self.store.get(self.key)
        if record is not None and record.expired(self.store.clock()):
            self._retire(record, f"{self.shown} expired")
            self.store.forget(self.key)
            record = None
        self.store.sweep()
        made_here = False
        if record is None:
            sid = self._submission_id()
            record = self.store.claim(self.key, self.request, sid, self.ttl)
            made_here = record.submission_id == sid
        if record.fingerprint != self.request.fingerprint():
            earlier = TransferRequest.from_json(record.request)
            left = record.expires_at - self.store.clock()
            raise ConfigError(
                f"{self.shown} belongs to a different transfer: "
                f"{'; '.join(self.request.differences(earlier))}. A key names one transfer: "
                f"pass another key (this one is kept {_duration(left)} more)")
        if record.outcome is None:
            if record.task_id:
                self.logger.info("re-attaching to Globus transfer %s (%s), started by an "
                                 "earlier run", record.task_id, self.shown)
            elif not made_here:
                self.logger.info("submitting with the stored submission id %s (%s): an "
                                 "earlier run's submit may have reached Globus",
                                 record.submission_id, self.shown)
            return record
        if record.outcome == SUCCEEDED or not self.fresh_on_retry:
            return record
        self._retire(record, f"the earlier attempt {record.outcome}")
        fresh = self.store.restart(self.key, record.generation, self._submission_id(),
                                   self.ttl)
        self.logger.info("attempt %d of %s: the earlier Globus transfer %s %s; submitting a "
                         "fresh one", fresh.generation, self.shown, record.task_id,
                         record.outcome)
        return fresh

    def _submission_id(self) -> str:
        try:
            answer = self.calls.call("get a submission id", lambda c: c.get_submission_id(),
                                     self.deadline, attempts=self._attempts())
        except DeadlinePassed as exc:
            raise TimedOut(f"no Globus submission id before the deadline (last answer: "
                           f"{exc.last or 'none'}); nothing was submitted") from None
        except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
            raise TransferFailed(f"could not get a submission id from Globus: "
                                 f"{describe(exc)}; nothing was submitted") from exc
        return str(answer["value"])

    def _attempts(self) -> int | None:
        return None if self.deadline.at is not None else SUBMIT_ATTEMPTS

    def _retire(self, record: Record, why: str) -> None:
        """Before a new transfer starts under this key: cancel the earlier one if it runs."""
        if not record.task_id:
            return
        task_id = record.task_id
        try:
            doc = self.calls.call(f"check transfer {task_id}", lambda c: c.get_task(task_id),
                                  Deadline(CANCEL_GRACE_S))
        except (DeadlinePassed, globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
            self.logger.warning("could not check the earlier Globus transfer %s (%s: %s); "
                                "starting a new one anyway: cancel %s yourself if it still "
                                "runs", record.task_id, why, describe(exc), record.task_id)
            return
        if doc["status"] not in LIVE:
            return
        done, answer = self.calls.cancel(record.task_id, CANCEL_GRACE_S)
        if done:
            self.logger.warning("cancelled the earlier Globus transfer %s, still %s, before "
                                "starting a new one (%s): %s", record.task_id, doc["status"],
                                why, answer)
        else:
            self.logger.warning("could not cancel the earlier Globus transfer %s, still %s "
                                "(%s): %s; starting a new one anyway", record.task_id,
                                doc["status"], why, answer)

    # -- submitting --------------------------------------------------------------------

    def _submit(self, record: Record) -> str:
        sid = record.submission_id
        req = self.request
        data = globus_sdk.TransferData(
            source_endpoint=req.source_endpoint, destination_endpoint=req.destination_endpoint,
            submission_id=sid, verify_checksum=req.verify_checksum,
            label=globus_sdk.MISSING if req.label is None else req.label,
            sync_level=globus_sdk.MISSING if req.sync_level is None else cast(Any, req.sync_level))
        for src, dst, recursive in self.request.items:
            data.add_item(src, dst, recursive=recursive)
        busy: list[str] = []
        unknown = (f"Globus transfer submitted (submission id {sid}, {self.shown}) but its "
                   "status is unknown")
        rerun = ("running the step again with the same key finds out (Globus answers a "
                 "repeated submission id with the task it made)")
        try:
            answer = self.calls.call("submit the transfer", lambda c: c.submit_transfer(data),
                                     self.deadline, attempts=self._attempts(), busy=busy)
        except DeadlinePassed as exc:
            raise TimedOut(f"{unknown}: no answer before the deadline (last: "
                           f"{exc.last or 'none'}); nothing to cancel; {rerun}") from None
        except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
            if retryable(exc):
                raise TransferStatusUnknown(f"{unknown}: {len(busy)} tries answered "
                                            f"{describe(exc)}; {rerun}") from exc
            if busy:
                raise TransferStatusUnknown(f"{unknown}: Globus answered {busy[0]}, then "
                                            f"refused the same submission: {describe(exc)}; "
                                            f"{rerun}") from exc
            self.store.end(self.key, record.generation, REFUSED, self.ttl)
            assert isinstance(exc, globus_sdk.GlobusAPIError)
            raise TransferFailed(f"Globus refused the transfer: {exc.code}: {exc.message}",
                                 http_status=exc.http_status) from exc
        task_id = str(answer["task_id"])
        self.store.set_task(self.key, record.generation, task_id, self.ttl)
        if answer.get("code") == "Duplicate":
            self.logger.info("Globus already had submission %s: following its transfer %s "
                             "(%s)", sid, task_id, self.shown)
        else:
            self.logger.info("submitted Globus transfer %s (%s -> %s, %d items, %s)", task_id,
                             self.request.source_endpoint, self.request.destination_endpoint,
                             len(self.request.items), self.shown)
        return task_id

    # -- waiting -----------------------------------------------------------------------

    def _end(self, generation: int, outcome: str,
             summary: dict[str, Any] | None = None) -> None:
        try:
            self.store.end(self.key, generation, outcome, self.ttl, summary)
        except sqlite3.Error as exc:  # never hide the step's own outcome behind this
            self.logger.warning("could not record that %s %s: %s", self.shown, outcome, exc)

    def _cancel(self, task_id: str, why: str) -> str:
        done, answer = self.calls.cancel(task_id, CANCEL_GRACE_S)
        if done:
            self.logger.warning("cancelled Globus transfer %s (%s): %s", task_id, why, answer)
            return "cancelled it"
        self.logger.error("could not cancel Globus transfer %s (%s): %s; it may still run",
                          task_id, why, answer)
        return f"could not cancel it ({answer}): it may still run"

    def _follow(self, generation: int, task_id: str) -> dict[str, Any]:
        tracker = FaultTracker(self.fault_timeout_s)
        try:
            doc = watch(self.calls, task_id, poll_interval_s=self.poll_interval_s,
                        deadline=self.deadline, tracker=tracker, logger=self.logger,
                        on_poll=lambda doc: self.store.touch(self.key, generation, self.ttl))
        except DeadlinePassed as exc:
            cancelled = self._cancel(task_id, "deadline")
            self._end(generation, TIMED_OUT)
            last = f"; last fault seen: {tracker.last_fault_text}" if tracker.last_fault_text \
                else ""
            busy = f"; Globus's last answer: {exc.last}" if exc.last else ""
            raise TimedOut(f"Globus transfer {task_id} did not finish within "
                           f"{_duration(self.deadline.seconds or 0)}{last}{busy}; {cancelled}",
                           task_id=task_id, fault=tracker.fault) from None
        except FaultPersisted as exc:
            cancelled = self._cancel(task_id, f"fault {exc.fault} persisted")
            self._end(generation, FAULT)
            raise TransferFailed(f"Globus transfer {task_id} stuck on {exc.text} for "
                                 f"{_duration(exc.seconds)} (fault_timeout_s="
                                 f"{self.fault_timeout_s}); "
                                 f"{cancelled}", task_id=task_id, fault=exc.fault) from None
        except FuncxFlowsError:  # could not read the task: its outcome stays unknown, and
            raise  # a retry re-attaches to it
        except BaseException as exc:  # interrupted: Prefect's timeout, a cancellation, ^C
            self._cancel(task_id, f"the step was interrupted: {type(exc).__name__}")
            self._end(generation, TIMED_OUT if isinstance(exc, TimeoutError) else CANCELLED)
            raise
        if doc["status"] == "SUCCEEDED":
            summary = {"task_id": task_id, "status": "SUCCEEDED", "files": doc.get("files", 0),
                       "files_transferred": doc.get("files_transferred", 0),
                       "bytes_transferred": doc.get("bytes_transferred", 0)}
            self._end(generation, SUCCEEDED, summary)
            return summary
        self._end(generation, FAILED)
        raise TransferFailed(f"Globus transfer {task_id} failed: {doc['failure']}",
                             task_id=task_id)


def run_transfer(source_endpoint: str, destination_endpoint: str,
                 items: Sequence[Any], *, label: str | None = None,
                 sync_level: str | None = "checksum", verify_checksum: bool = True,
                 client: globus_sdk.TransferClient | None = None, key: str | None = None,
                 poll_interval_s: float = 10.0, timeout_s: float | None = None,
                 fault_timeout_s: float | None = None, fresh_on_retry: bool = True,
                 key_ttl_s: float = KEY_TTL_S, home: Path | None = None) -> dict[str, Any]:
    """Submit (at most once per key and attempt) and wait; returns the task's summary.
    See ``transfer`` for the options."""
    request = TransferRequest.build(source_endpoint, destination_endpoint, items, label=label,
                                    sync_level=sync_level, verify_checksum=verify_checksum)
    _check(poll_interval_s, timeout_s, fault_timeout_s, key_ttl_s, key, sync_level)
    context = _RunContext.current()
    limits = [t for t in (timeout_s, context.step_timeout_s()) if t is not None]
    deadline = Deadline(min(limits) if limits else None)
    stored = f"key:{key}" if key is not None else context.default_key(request)
    shown = f"key {key!r}" if key is not None else "this task's key"
    logger = _run_logger()
    tc = client or transfer_client_from_env()
    if stored is not None:
        root = home or home_dir()
        store = KeyStore.at_home(root)
        sweep_legacy(root, key_ttl_s)
    else:  # outside Prefect and without a key: nothing to resume, nothing to keep
        store, stored, shown = KeyStore(None), f"once:{time.time_ns()}", "no key"
    with store, GlobusCalls(tc, logger, RETRY_POLICY) as calls:
        return _Step(calls, store, stored, shown, request, logger, deadline,
                     poll_interval_s=poll_interval_s, fault_timeout_s=fault_timeout_s,
                     fresh_on_retry=fresh_on_retry, key_ttl_s=key_ttl_s).run()


@task(name="globus-transfer", cache_policy=NO_CACHE)
def transfer(source_endpoint: str, destination_endpoint: str, items: Sequence[Any], *,
             label: str | None = None, sync_level: str | None = "checksum",
             verify_checksum: bool = True, client: globus_sdk.TransferClient | None = None,
             key: str | None = None, poll_interval_s: float = 10.0,
             timeout_s: float | None = None, fault_timeout_s: float | None = None,
             fresh_on_retry: bool = True, key_ttl_s: float = KEY_TTL_S) -> dict[str, Any]:
    """Transfer ``items`` ((source path, destination path[, recursive]) pairs or dicts)
    between two Globus collections; returns the finished task's summary.

    ``key`` names the transfer across flow runs (default: this flow run, task and
    request). ``timeout_s`` (or the task's ``timeout_seconds``) is a deadline that
    cancels the transfer and raises ``TimedOut``. ``fault_timeout_s`` fails the step
    (cancelling the transfer) when a fault such as PERMISSION_DENIED lasts that long.
    ``fresh_on_retry=False`` makes a retry re-attach to an ended transfer instead of
    submitting a new one. Keys are forgotten ``key_ttl_s`` after the step last saw
    their transfer."""
    return run_transfer(source_endpoint, destination_endpoint, items, label=label,
                        sync_level=sync_level, verify_checksum=verify_checksum, client=client,
                        key=key, poll_interval_s=poll_interval_s, timeout_s=timeout_s,
                        fault_timeout_s=fault_timeout_s, fresh_on_retry=fresh_on_retry,
                        key_ttl_s=key_ttl_s)
