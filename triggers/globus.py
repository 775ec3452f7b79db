"""The Globus transfer trigger: fire once per completed transfer task.

Transfer has no push notification, so it polls, from a durable watermark
(the newest completion time seen, minus an overlap so that late-indexed tasks
are not missed) and de-duplicates on task id. Globus errors and rate limits
back off through the shared retry policy; the watermark only moves after a
page of tasks has been recorded. ``task_list`` returns at most 1000 tasks, oldest
first; a poll that hits that cap is followed by one from the watermark itself
(no overlap), so a backlog drains instead of re-reading the same window.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import globus_sdk

from funcx_flows.retry import Backoff, RetryPolicy
from funcx_flows.triggers.config import GlobusTriggerConfig
from funcx_flows.triggers.state import StateStore
from funcx_flows.triggers.targets import Starter

log = logging.getLogger(__name__)
_FMT = "%Y-%m-%dT%H:%M:%S"
TASK_LIST_CAP = 1000  # task_list's paginator stops here (Transfer's own limit)


def _parse_time(text: str) -> datetime:
    text = text.replace("Z", "+00:00").split(".")[0].split("+")[0]
    return datetime.strptime(text, _FMT).replace(tzinfo=UTC)


class GlobusTransferTrigger:
    def __init__(self, config: GlobusTriggerConfig, store: StateStore,
                 client: globus_sdk.TransferClient, call: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.client = client
        self.clock = clock
        self.starter = Starter(config.name, config.target, store, config.max_in_flight, call,
                               default_parameters=lambda ctx: {"task_id": ctx["task_id"],
                                                               "files": ctx["files"]})
        self._label = re.compile(config.label_pattern) if config.label_pattern else None
        self._backoff = Backoff(RetryPolicy(initial=config.poll_interval_s, max_delay=600.0))
        self._next_poll = 0.0
        self._saturated = False
        self._held: IO[bytes] | None = None
        self.problems: list[str] = []

    def start(self, wake: threading.Event | None = None) -> None:
        if wake is not None:
            self.starter.wake = wake
        self._held = self.store.claim_trigger(self.name)
        self.starter.recover()

    def stop(self, wait: bool = True) -> None:
        self.starter.close(wait=wait)
        if self._held is not None:
            self._held.close()
            self._held = None

    def tick(self) -> None:
        if self.clock() >= self._next_poll:
            try:
                n = self.poll()
                if self._backoff.attempt:
                    self.store.set_mark(self.name, "problem", "")
                self._backoff.succeeded()
                self._next_poll = self.clock() + self.config.poll_interval_s
                if n:
                    log.info("trigger %s: %d new transfer task(s)", self.name, n)
            except (globus_sdk.GlobusAPIError, globus_sdk.GlobusConnectionError) as exc:
                delay = self._backoff.failed()
                self._next_poll = self.clock() + delay
                msg = f"Globus error ({exc}); polling again in {delay:.0f}s"
                log.warning("trigger %s: %s", self.name, msg)
                self.problems = [*self.problems[-9:], msg]
                self.store.set_mark(self.name, "problem", msg)
        self.starter.pump()

    def _since(self) -> datetime:
        """Where this poll starts: the watermark minus the overlap, never before the
        moment the trigger first started (its durable floor: no history replayed)."""
        floor_mark = self.store.get_mark(self.name, "floor")
        if floor_mark is None:
            start = datetime.fromtimestamp(self.clock(), tz=UTC)
            floor_mark = (start - timedelta(seconds=self.config.overlap_s)).strftime(_FMT)
            self.store.set_mark(self.name, "floor", floor_mark)
        floor = _parse_time(floor_mark)
        mark = self.store.get_mark(self.name, "completion_time")
        if not mark:
            return floor
        if self._saturated:  # the last poll hit Transfer's cap: move on from the mark
            return max(floor, _parse_time(mark))
        return max(floor, _parse_time(mark) - timedelta(seconds=self.config.overlap_s))

    def _tasks(self, since: str) -> Iterable[dict[str, Any]]:
        c = self.config
        if c.endpoint_manager:
            pages = self.client.paginated.endpoint_manager_task_list(
                filter_endpoint=c.destination_endpoint, filter_status="SUCCEEDED",
                filter_completion_time=f"{since},")
        else:
            pages = self.client.paginated.task_list(
                filter={"type": "TRANSFER", "status": "SUCCEEDED",
                        "completion_time": f"{since},"}, orderby="completion_time ASC")
        for page in pages:
            yield from page["DATA"]

    def _files(self, task_id: str) -> list[str]:
        if not self.config.list_files:
            return []
        if self.config.endpoint_manager:
            pages = self.client.paginated.endpoint_manager_task_successful_transfers(task_id)
        else:
            pages = self.client.paginated.task_successful_transfers(task_id)
        return [item["destination_path"] for page in pages for item in page["DATA"]]

    def poll(self) -> int:
        c = self.config
        since = self._since().strftime(_FMT)
        newest: str | None = self.store.get_mark(self.name, "completion_time")
        fired = listed = 0
        for task in self._tasks(since):
            listed += 1
            task_id = str(task["task_id"])
            done = task.get("completion_time") or ""
            if done and (newest is None or _parse_time(done) > _parse_time(newest)):
                newest = done
            if c.destination_endpoint and task.get("destination_endpoint_id") not in (
                    c.destination_endpoint, None) and not c.endpoint_manager:
                continue
            if self._label is not None and not self._label.search(task.get("label") or ""):
                continue
            if self.store.seen_task(self.name, task_id):
                continue
            files = self._files(task_id)
            if c.path_prefix and not any(f.startswith(c.path_prefix) for f in files):
                continue
            context = {"trigger": self.name, "task_id": task_id, "files": files,
                       "label": task.get("label") or "", "completion_time": done,
                       "destination_endpoint": task.get("destination_endpoint_id") or ""}
            if self.store.add_run(self.name, context, seen_task=task_id) is not None:
                fired += 1
        if newest:
            self.store.set_mark(self.name, "completion_time", newest)
        self._saturated = listed >= TASK_LIST_CAP
        return fired
