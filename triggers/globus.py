"""The Globus transfer trigger: fire once per transfer that lands in the watched collection.

Transfer has no push notification, so the trigger polls. A poll runs on a thread
of its own, so that a slow or held answer never holds up the serve loop, and it
queues a run for each matching task as soon as that task is decided::

    serve loop (tick)            poller thread                    file-list threads (N)
    -----------------            -------------                    ---------------------
    poll due? start one  ---->   list [start, now) completely
                                 (globus_listing.Lister), page by page:
                                   skip tasks already decided
                                   reject on status, destination,   successful_transfers
                                   label, start point (durably) -->  (retry policy); paths:
    Starter.pump()  <--- wake -- queue a run (status, destination,   queue a run, or reject
                                 label matched, no file list) <---   (durably)
    poll ended: watermark kept
    or moved, backoff, stall check

``start`` is the watermark (the newest completion time of the last complete
listing) minus ``overlap_s``, never before the start point (the first start, or
``since``). Every task is decided once and for good: a run (``seen_tasks``) or a
rejection (``rejected_tasks``), so nothing fires twice and nothing is fetched
twice. The watermark moves only once a listing was whole and every task in it
decided; Globus errors back off through the shared retry policy and keep it, so
a restart (even after ``kill -9``) lists again from where the last complete poll
left off. No complete listing for ``stall_after_s`` is logged and recorded as a
stall, which ``trigger status`` shows.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import globus_sdk

from funcx_flows.retry import Backoff, RetryPolicy
from funcx_flows.triggers.config import GlobusTriggerConfig
from funcx_flows.triggers.globus_listing import Lister, PollStopped, Task, fmt, parse_time
from funcx_flows.triggers.state import StateStore
from funcx_flows.triggers.targets import Starter

log = logging.getLogger(__name__)
FINAL = ("SUCCEEDED", "FAILED")  # other statuses may still change: never decided early
RETRYABLE = (408, 429, 500, 502, 503, 504)
FILE_LISTS = RetryPolicy(initial=0.5, max_delay=10.0, max_attempts=4)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Round:
    """One poll's bookkeeping, shared by the poller and the file-list threads."""

    handled: set[str] = field(default_factory=set)
    fetches: list[cf.Future[None]] = field(default_factory=list)
    fired: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> None:
        with self.lock:
            self.fired += 1


class GlobusTransferTrigger:
    def __init__(self, config: GlobusTriggerConfig, store: StateStore,
                 client: globus_sdk.TransferClient, call: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 file_lists: RetryPolicy = FILE_LISTS) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.client = client
        self.clock = clock
        self.starter = Starter(config.name, config.target, store, config.max_in_flight, call,
                               default_parameters=lambda ctx: {"task_id": ctx["task_id"],
                                                               "files": ctx["files"]})
        self._label = re.compile(config.label_pattern) if config.label_pattern else None
        # rejections are remembered with the rules that made them: changed rules judge again
        self.rules = hashlib.sha256(json.dumps(
            [config.destination_endpoint, config.path_prefix, config.label_pattern,
             config.list_files, config.endpoint_manager]).encode()).hexdigest()[:16]
        self._backoff = Backoff(RetryPolicy(initial=config.poll_interval_s, max_delay=600.0))
        self._file_lists = file_lists
        self._stopping = threading.Event()
        self._poller = cf.ThreadPoolExecutor(1, thread_name_prefix=f"globus-{self.name}")
        self._fetchers = cf.ThreadPoolExecutor(config.file_list_concurrency,
                                               thread_name_prefix=f"globus-{self.name}-files")
        self._poll: cf.Future[int] | None = None
        self._poll_started = 0.0
        self._next_poll = 0.0
        self._last_complete = 0.0
        self._up_since = 0.0
        self._start_point: datetime | None = None
        self._problem = ""  # why the last poll failed ("" once one succeeds)
        self._stalled = ""
        self._stall_logged = 0.0
        self._held: IO[bytes] | None = None
        self.problems: list[str] = []

    # ------------------------------------------------------------ lifecycle --

    def start(self, wake: threading.Event | None = None) -> None:
        if wake is not None:
            self.starter.wake = wake
        self._held = self.store.claim_trigger(self.name)
        self.starter.recover()
        self._floor()
        self._last_complete = float(self.store.get_mark(self.name, "last_complete_poll") or 0)
        self._up_since = self.clock()  # a stall is counted from this process's start

    def stop(self, wait: bool = True) -> None:
        self._stopping.set()
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        self._poller.shutdown(wait=wait)
        self._fetchers.shutdown(wait=wait)
        self.starter.close(wait=wait)
        if self._held is not None:
            self._held.close()
            self._held = None

    def tick(self) -> None:
        now = self.clock()
        if self._poll is not None and self._poll.done():
            self._finished(self._poll)
            self._poll = None
        if self._poll is None and now >= self._next_poll and not self._stopping.is_set():
            self._poll_started = now
            self._poll = self._poller.submit(self.poll)
            self._poll.add_done_callback(lambda _: self.starter.wake.set())
        self._watch_for_stall(now)
        self.starter.pump()

    def _finished(self, poll: cf.Future[int]) -> None:
        try:
            n = poll.result()
        except PollStopped:
            return
        except Exception as exc:  # any failed poll keeps the watermark and backs off
            delay = self._backoff.failed()
            self._next_poll = self.clock() + delay
            kind = ("Globus error" if isinstance(exc, globus_sdk.GlobusError)
                    else type(exc).__name__)
            msg = f"{kind} ({exc}); polling again in {delay:.0f}s"
            if isinstance(exc, globus_sdk.GlobusError):
                log.warning("trigger %s: %s", self.name, msg)
            else:
                log.error("trigger %s: %s", self.name, msg, exc_info=exc)
            self.problems = [*self.problems[-9:], msg]
            self._problem = msg
            self.store.set_mark(self.name, "problem", msg)
            return
        if self._problem:
            self._problem = ""
            self.store.set_mark(self.name, "problem", "")
        self._backoff.succeeded()
        self._next_poll = self._poll_started + self.config.poll_interval_s
        if n:
            log.info("trigger %s: %d new transfer task(s)", self.name, n)

    def _watch_for_stall(self, now: float) -> None:
        """No complete listing for ``stall_after_s``: say so (again every stall_after_s)."""
        quiet = now - max(self._last_complete, self._up_since)
        if quiet <= self.config.stall_after_s:
            if self._stalled:
                log.warning("trigger %s: listing transfers completely again; no longer "
                            "stalled", self.name)
                self._stalled = ""
                self.store.set_mark(self.name, "stalled", "")
            return
        if self._stalled and now - self._stall_logged < self.config.stall_after_s:
            return
        why = self._problem or (
            f"a poll has been running since {_when(self._poll_started)}"
            if self._poll is not None else "no poll has ended")
        last = (f"since {_when(self._last_complete)}" if self._last_complete
                else "yet")
        self._stalled = f"no complete listing {last} ({quiet:.0f}s in this run): {why}"
        self._stall_logged = now
        log.warning("trigger %s: stalled: %s; watermark %s", self.name, self._stalled,
                    self.store.get_mark(self.name, "completion_time") or "none yet")
        self.store.set_mark(self.name, "stalled", self._stalled)

    # ---------------------------------------------------------------- poll --

    def _floor(self) -> datetime:
        """The start point, fixed durably on the first start: nothing that completed
        before it fires (``since`` moves it back to ask for history)."""
        if self._start_point is None:
            mark = self.store.get_mark(self.name, "floor")
            if mark is None:
                start = self.config.since or datetime.fromtimestamp(self.clock(), tz=UTC)
                mark = fmt(start)
                self.store.set_mark(self.name, "floor", mark)
            self._start_point = parse_time(mark)
        return self._start_point

    def _since(self) -> datetime:
        floor = self._floor()
        mark = self.store.get_mark(self.name, "completion_time")
        if not mark:
            return floor
        start: datetime = parse_time(mark) - timedelta(seconds=self.config.overlap_s)
        return max(floor, start)

    def poll(self) -> int:
        """List from the start point completely and decide every task in it; returns
        how many runs it queued. Raises (watermark kept) when any part failed."""
        start = self._since()
        self.store.set_marks(self.name, {"listing_from": fmt(start),
                                         "poll_started": repr(self.clock())})
        lister = Lister(self.client, self.config, self._stopping)
        newest = self.store.get_mark(self.name, "completion_time")
        newest_t = parse_time(newest) if newest else None
        round_ = _Round()
        try:
            for tasks in lister.pages(start):
                for task in tasks:
                    done = task.get("completion_time")
                    if done and (newest_t is None or parse_time(done) > newest_t):
                        newest, newest_t = done, parse_time(done)
                self._decide(tasks, round_)
        finally:  # every fetch started ends before the poll does, even a failed one
            cf.wait(round_.fetches)
        for fetch in round_.fetches:
            fetch.result()  # the first failure fails the poll
        self._note_gaps(lister)
        self._last_complete = self.clock()
        marks = {"last_complete_poll": repr(self._last_complete)}
        if newest:
            marks["completion_time"] = newest
        self.store.set_marks(self.name, marks)
        return round_.fired

    def _note_gaps(self, lister: Lister) -> None:
        new = self.store.note_gaps(self.name, [(g.what, g.detail) for g in lister.gaps])
        for g in lister.gaps:
            if g.what in new:
                log.warning("trigger %s: could not list every transfer %s: %s", self.name,
                            g.what, g.detail)

    def _decide(self, tasks: list[Task], round_: _Round) -> None:
        if self._stopping.is_set():
            raise PollStopped("the trigger is stopping")
        fresh = []
        for task in tasks:
            task_id = str(task["task_id"])
            if task_id not in round_.handled:
                round_.handled.add(task_id)
                fresh.append(task)
        known = self.store.decided_tasks(self.name, [str(t["task_id"]) for t in fresh],
                                         self.rules)
        floor = self._floor()
        rejected = []
        for task in fresh:
            task_id = str(task["task_id"])
            if task_id in known or task.get("status") not in FINAL:
                continue
            reason = self._mismatch(task, floor)
            if reason:
                rejected.append((task_id, reason))
            elif self.config.list_files:
                round_.fetches.append(self._fetchers.submit(self._judge_files, task, round_))
            else:
                self._fire(task, [], round_)
        if rejected:
            self.store.reject_tasks(self.name, rejected, self.rules)

    def _mismatch(self, task: Task, floor: datetime) -> str:
        """Why a task cannot fire, from its record alone ("" if it may)."""
        c = self.config
        if task.get("status") != "SUCCEEDED" or task.get("type", "TRANSFER") != "TRANSFER":
            return f"{task.get('type')} task {task.get('status')}"
        dest = task.get("destination_endpoint_id")
        if c.destination_endpoint and dest != c.destination_endpoint:
            return f"destination {dest}, not the watched collection"
        if self._label is not None and not self._label.search(task.get("label") or ""):
            return "label does not match label_pattern"
        done = task.get("completion_time")
        if not done or parse_time(done) < floor:
            return f"completed {done}, before the trigger's start point {fmt(floor)}"
        return ""

    def _judge_files(self, task: Task, round_: _Round) -> None:
        task_id = str(task["task_id"])
        try:
            files = self._files(task_id)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status in RETRYABLE:
                raise
            self.store.reject_tasks(self.name, [(task_id, f"file list unavailable: {exc}")],
                                    self.rules)
            log.warning("trigger %s: transfer %s not fired: its file list is unavailable (%s)",
                        self.name, task_id, exc)
            return
        prefix = self.config.path_prefix
        if prefix and not any(f.startswith(prefix) for f in files):
            self.store.reject_tasks(self.name, [(task_id, f"no file under {prefix}")],
                                    self.rules)
            return
        self._fire(task, files, round_)

    def _files(self, task_id: str) -> list[str]:
        """The task's destination paths, retried under the shared policy."""
        attempt = 0
        while True:
            if self._stopping.is_set():
                raise PollStopped("the trigger is stopping")
            try:
                if self.config.endpoint_manager:
                    pages = self.client.paginated.endpoint_manager_task_successful_transfers(
                        task_id)
                else:
                    pages = self.client.paginated.task_successful_transfers(task_id)
                return [item["destination_path"] for page in pages for item in page["DATA"]]
            except (globus_sdk.GlobusAPIError, globus_sdk.GlobusConnectionError) as exc:
                retryable = (isinstance(exc, globus_sdk.GlobusConnectionError)
                             or exc.http_status in RETRYABLE)
                attempt += 1
                if not retryable or self._file_lists.exhausted(attempt):
                    raise
                self._stopping.wait(self._file_lists.delay(attempt - 1))

    def _fire(self, task: Task, files: list[str], round_: _Round) -> None:
        task_id = str(task["task_id"])
        context = {"trigger": self.name, "task_id": task_id, "files": files,
                   "label": task.get("label") or "",
                   "completion_time": task.get("completion_time") or "",
                   "destination_endpoint": task.get("destination_endpoint_id") or ""}
        if self.store.add_run(self.name, context, seen_task=task_id) is not None:
            round_.count()
            self.starter.wake.set()
