"""Watching a Globus transfer until it ends: progress, faults and their events.

A transfer can be ACTIVE and still stuck: Globus retries a fault such as
PERMISSION_DENIED (shown in ``nice_status``) until someone fixes it or the
task's own deadline passes, and an INACTIVE task waits for someone to act.
Every change of ``nice_status`` is logged, faults with the newest entries of the
task's event list, so a person reading the Prefect log sees why the step waits.
``FaultTracker`` is the pure part (what changed, how long a fault has lasted);
``watch`` is the polling shell around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import globus_sdk

from funcx_flows.errors import TransferFailed
from funcx_flows.prefect._globus_calls import Deadline, GlobusCalls, Logger, describe

HEALTHY = (None, "", "OK", "Queued")
ENDED = ("SUCCEEDED", "FAILED")
LIVE = ("ACTIVE", "INACTIVE")
EVENTS_READ = 10  # newest events read when a fault shows
EVENTS_LOGGED = 3
DETAILS_CHARS = 400


def fault_of(doc: dict[str, Any]) -> str | None:
    """The fault a task document shows, if any: its nice_status, or INACTIVE, or a pause."""
    nice = doc.get("nice_status")
    if nice not in HEALTHY:
        return str(nice)
    if doc.get("status") == "INACTIVE":
        return "INACTIVE"
    if doc.get("is_paused"):
        return "PAUSED"
    return None


def _one_line(text: Any) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= DETAILS_CHARS else flat[:DETAILS_CHARS - 3] + "..."


def fault_text(doc: dict[str, Any]) -> str:
    """A fault in words: its code, Globus's short description and details."""
    parts = [fault_of(doc) or str(doc.get("nice_status"))]
    for field in ("nice_status_short_description", "nice_status_details"):
        if doc.get(field) and doc[field] != parts[0]:
            parts.append(_one_line(doc[field]))
    return ": ".join(parts)


@dataclass(frozen=True)
class Change:
    """What one look at the task showed that the previous one did not."""

    status: str
    first: bool  # the first look
    progress: bool  # status, files or bytes moved
    nice_status: tuple[Any, Any] | None  # (before, now) when nice_status changed
    fault: str | None  # the fault now, if any
    fault_before: str | None
    inactive: bool  # the task just became INACTIVE


class FaultTracker:
    """Follows a task's status and faults across polls; knows when a fault has lasted
    ``fault_timeout_s`` (``None``: never too long)."""

    def __init__(self, fault_timeout_s: float | None) -> None:
        self.fault_timeout_s = fault_timeout_s
        self._last: dict[str, Any] | None = None
        self.fault: str | None = None
        self.fault_since: float | None = None
        self.last_fault_text: str | None = None  # kept after the fault clears

    def observe(self, doc: dict[str, Any], now: float) -> Change:
        first = self._last is None
        before = self._last or {}
        self._last = doc
        status = str(doc.get("status"))
        progress = any(doc.get(f) != before.get(f) for f in
                       ("status", "files", "files_transferred", "bytes_transferred"))
        nice = (before.get("nice_status"), doc.get("nice_status"))
        fault = fault_of(doc) if status in LIVE else None
        fault_before, self.fault = self.fault, fault
        if fault is None:
            self.fault_since = None
        else:
            if self.fault_since is None:
                self.fault_since = now
            self.last_fault_text = fault_text(doc)
        return Change(status=status, first=first, progress=progress,
                      nice_status=nice if first or nice[0] != nice[1] else None, fault=fault,
                      fault_before=fault_before,
                      inactive=status == "INACTIVE" and before.get("status") != "INACTIVE")

    def fault_deadline(self) -> float | None:
        if self.fault_since is None or self.fault_timeout_s is None:
            return None
        return self.fault_since + self.fault_timeout_s

    def persisted(self, now: float) -> bool:
        at = self.fault_deadline()
        return at is not None and now >= at


class FaultPersisted(Exception):
    """A fault lasted ``fault_timeout_s``."""

    def __init__(self, fault: str, text: str, seconds: float) -> None:
        super().__init__(f"{text} for {seconds:.0f}s")
        self.fault = fault
        self.text = text
        self.seconds = seconds


class EventLog:
    """Logs the task's events that were not logged before."""

    def __init__(self, calls: GlobusCalls, task_id: str, logger: Logger) -> None:
        self.calls, self.task_id, self.logger = calls, task_id, logger
        self.seen: set[tuple[Any, ...]] = set()

    def read(self, deadline: Deadline) -> list[dict[str, Any]]:
        """Newest first; empty if Globus cannot tell now (that is logged)."""
        try:
            answer = self.calls.call(f"read the event list of transfer {self.task_id}",
                                     lambda c: c.task_event_list(self.task_id,
                                                                 limit=EVENTS_READ),
                                     deadline, attempts=1)
        except Exception as exc:  # the events only explain; the wait goes on without them
            self.logger.warning("could not read the event list of Globus transfer %s: %s",
                                self.task_id, describe(exc))
            return []
        return [dict(e) for e in answer.get("DATA", [])]

    def log_new(self, deadline: Deadline) -> None:
        fresh = []
        for event in self.read(deadline):
            ident = (event.get("time"), event.get("code"), event.get("description"))
            if ident not in self.seen:
                self.seen.add(ident)
                fresh.append(event)
        for event in fresh[:EVENTS_LOGGED]:
            level = self.logger.warning if event.get("is_error") else self.logger.info
            details = f"; {_one_line(event['details'])}" if event.get("details") else ""
            level("Globus transfer %s event %s at %s: %s%s", self.task_id, event.get("code"),
                  event.get("time"), event.get("description"), details)


def describe_failure(events: EventLog, doc: dict[str, Any], deadline: Deadline) -> str:
    """Why a FAILED task failed, in Globus's words."""
    fatal = doc.get("fatal_error") or {}
    if isinstance(fatal, dict) and fatal.get("description"):
        return f"{fatal.get('code', '')}: {fatal['description']}".strip(": ")
    reason = doc.get("nice_status_short_description") or doc.get("nice_status") or ""
    if not reason:
        for event in events.read(deadline):
            if event.get("is_error"):
                return f"{event.get('code')}: {event.get('description')}"
    return str(reason) or "no reason given"


def _report(change: Change, doc: dict[str, Any], task_id: str, logger: Logger,
            events: EventLog, deadline: Deadline) -> None:
    if change.progress:
        logger.info("Globus transfer %s: %s, %d/%d files, %d bytes", task_id, change.status,
                    doc.get("files_transferred") or 0, doc.get("files") or 0,
                    doc.get("bytes_transferred") or 0)
    new_fault = change.fault is not None and (change.fault != change.fault_before
                                              or change.nice_status is not None)
    if change.inactive:
        logger.warning("Globus transfer %s is INACTIVE (it waits until someone acts): %s",
                       task_id, fault_text(doc))
    elif new_fault:
        logger.warning("Globus transfer %s: fault %s%s", task_id, fault_text(doc),
                       f" (was {change.fault_before})" if change.fault_before else "")
    elif change.fault_before is not None and change.fault is None:
        logger.info("Globus transfer %s: fault %s cleared (nice_status now %s)", task_id,
                    change.fault_before, doc.get("nice_status"))
    elif change.nice_status is not None and not change.first:
        logger.info("Globus transfer %s: nice_status %s -> %s", task_id, *change.nice_status)
    if change.inactive or new_fault:
        events.log_new(deadline)


def watch(calls: GlobusCalls, task_id: str, *, poll_interval_s: float, deadline: Deadline,
          tracker: FaultTracker, logger: Logger,
          on_poll: Callable[[dict[str, Any]], None] = lambda doc: None) -> dict[str, Any]:
    """Poll until the task ends; returns its last document. Raises ``DeadlinePassed``
    at the deadline and ``FaultPersisted`` when a fault outlasts the tracker's limit."""
    events = EventLog(calls, task_id, logger)
    while True:
        try:
            doc = dict(calls.call(f"read transfer {task_id}", lambda c: c.get_task(task_id),
                                  deadline, pace=poll_interval_s).data)
        except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
            raise TransferFailed(f"cannot read Globus transfer {task_id}: {describe(exc)}",
                                 task_id=task_id) from exc
        now = time.monotonic()
        change = tracker.observe(doc, now)
        on_poll(doc)
        _report(change, doc, task_id, logger, events, deadline)
        if change.status in ENDED:
            if change.status == "FAILED":
                doc["failure"] = describe_failure(events, doc, deadline)
            return doc
        if tracker.persisted(now) and tracker.fault:
            raise FaultPersisted(tracker.fault, tracker.last_fault_text or tracker.fault,
                                 now - (tracker.fault_since or now))
        waits = [poll_interval_s]
        remaining = deadline.remaining()
        if remaining is not None:
            waits.append(remaining)
        fault_at = tracker.fault_deadline()
        if fault_at is not None:
            waits.append(fault_at - now)
        wait = max(0.0, min(waits))
        if wait > 0:
            calls.policy.sleep(wait)  # at the deadline, the next call raises DeadlinePassed
