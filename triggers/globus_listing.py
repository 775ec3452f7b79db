"""Every transfer task that completed since a given second, whatever the volume.

Transfer's ``task_list`` answers at most 1,000 tasks for one filter (globus-sdk's
paginator stops there, and so does the service: ``offset + limit`` <= 1000),
and its time filters have one-second resolution. So a range is read in pieces
that each fit under the cap, and an answer is taken as the whole of its range
only when its ``total`` says so::

    [since, open)  --task_list, completion_time ASC-->  total <= 1000: done
       | more: the answer holds every task of each second before its last one;
       |       read on from that last second
       | that second alone holds more than 1000:
       |    [second, second] by request_time ASC, the same way
       |    | one request second of that completion second holds more than 1000:
       |    |   no filter is left to tell them apart; listed as far as the API
       |    |   allows and reported as a Gap (shown by `trigger status`)

``endpoint_manager_task_list`` (activity_monitor role) pages by ``last_key``
with no cap, so that mode is one paged read; only transfers *into* the watched
collection are asked for (``filter_endpoint_use=destination``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import globus_sdk

from funcx_flows.errors import FuncxFlowsError
from funcx_flows.triggers.config import GlobusTriggerConfig

log = logging.getLogger(__name__)
FMT = "%Y-%m-%dT%H:%M:%S"  # what Transfer's time filters take: whole seconds, UTC
CAP = 1000  # tasks one task_list filter can answer (globus-sdk's max_total_results)
SECOND = timedelta(seconds=1)
Task = dict[str, Any]


class ListingError(FuncxFlowsError):
    """Transfer answered a listing inconsistently (a total with no tasks to show)."""

    code = "globus_listing"
    http_status = 502


class PollStopped(FuncxFlowsError):
    """The trigger is stopping; the poll in progress gives up (its watermark kept)."""

    code = "poll_stopped"


def parse_time(text: str) -> datetime:
    """A Transfer time (ISO 8601, UTC, maybe with fractions) to the whole second."""
    text = text.replace("Z", "+00:00").split(".")[0].split("+")[0]
    return datetime.strptime(text, FMT).replace(tzinfo=UTC)


def fmt(when: datetime) -> str:
    return when.astimezone(UTC).strftime(FMT)


@dataclass(frozen=True)
class Gap:
    """Tasks one listing could not reach: more than the cap share both seconds."""

    completion: str
    request: str
    listed: int
    total: int

    @property
    def what(self) -> str:
        return f"completed {self.completion}, requested {self.request}"

    @property
    def detail(self) -> str:
        return (f"{self.listed:,} of {self.total:,} listed: task_list has no filter left to "
                "split them (endpoint_manager mode pages without this cap)")


class Lister:
    """One poll's listing: ``pages(since)`` yields tasks as they are read, so the
    caller can start work on them before the listing ends; ``gaps`` and
    ``requests`` say what it could not reach and what it cost."""

    def __init__(self, client: globus_sdk.TransferClient, config: GlobusTriggerConfig,
                 stopping: threading.Event | None = None) -> None:
        self.client = client
        self.config = config
        self.stopping = stopping or threading.Event()
        self.requests = 0
        self.gaps: list[Gap] = []

    def pages(self, since: datetime) -> Iterator[list[Task]]:
        if self.config.endpoint_manager:
            return self._managed(since)
        return self._own(since)

    def _check(self) -> None:
        if self.stopping.is_set():
            raise PollStopped("the trigger is stopping")

    # -------------------------------------------------- endpoint manager --

    def _managed(self, since: datetime) -> Iterator[list[Task]]:
        self._check()
        pages = self.client.paginated.endpoint_manager_task_list(
            filter_endpoint=self.config.destination_endpoint, filter_endpoint_use="destination",
            filter_status="SUCCEEDED", filter_completion_time=f"{fmt(since)},",
            query_params={"limit": CAP})
        for page in pages:
            self.requests += 1
            yield list(page["DATA"])
            self._check()

    # ------------------------------------------------------- own tasks --

    def _read(self, orderby: str, **times: str) -> tuple[list[Task], int]:
        """One filter's first (up to) 1,000 tasks and how many match it in all."""
        self._check()
        tasks: list[Task] = []
        total = 0
        for page in self.client.paginated.task_list(
                filter={"type": "TRANSFER", "status": "SUCCEEDED", **times}, orderby=orderby):
            self.requests += 1
            tasks.extend(page["DATA"])
            total = int(page.get("total", len(tasks)))
        if total > len(tasks) and not tasks:
            raise ListingError(f"Transfer's task_list said {total} tasks match {times} but "
                               "showed none")
        return tasks, total

    def _own(self, since: datetime) -> Iterator[list[Task]]:
        low = since
        while True:
            tasks, total = self._read("completion_time ASC", completion_time=f"{fmt(low)},")
            yield tasks
            if len(tasks) >= total:
                return
            last = parse_time(tasks[-1]["completion_time"])
            if last > low:  # every second before `last` was whole in this answer
                low = last
                continue
            yield from self._one_second(low)
            low += SECOND

    def _one_second(self, second: datetime) -> Iterator[list[Task]]:
        """More than the cap completed in ``second``: read it by request time."""
        when = fmt(second)
        low: datetime | None = None
        while True:
            times = {"completion_time": f"{when},{when}"}
            if low is not None:
                times["request_time"] = f"{fmt(low)},"
            tasks, total = self._read("request_time ASC", **times)
            yield tasks
            if len(tasks) >= total:
                return
            last = parse_time(tasks[-1]["request_time"])
            if low is None or last > low:
                low = last
                continue
            self.gaps.append(Gap(when, fmt(low), len(tasks), total))
            low += SECOND
