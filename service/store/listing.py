"""Listing a user's tasks: filters, newest first, and keyset paging.

A listing reads the index on (owner, time received) backwards and stops after
``limit`` rows, so its cost follows the page, not how many tasks the user has
kept. Paging is by a cursor that names the last row seen (its time received
and its id), not by an offset: a page starts where the previous one ended, even
while tasks are being added, and a deep page costs what the first one does.

Tasks are never shared: a listing holds the caller's own tasks only (a task run
on an endpoint shared with the caller is the caller's; one another user ran on
the caller's endpoint is not).

The REST route (``GET /v1/tasks``) and the dashboard both call ``list_tasks``
with a ``TaskFilter``, which checks its values when it is made (``InvalidRequest``,
422, never a database error).
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, and_, or_, select

from funcx_flows.errors import InvalidRequest

from .. import lifecycle as lc
from ..db import tasks
from .identity import valid_uuid

MAX_LIMIT = 1000

# what a listing shows of a task: no payload, result, stdout or logs (a page of
# large results would be read for nothing; ``fetch`` reads those)
LISTED_COLUMNS = [tasks.c.task_id, tasks.c.function_id, tasks.c.endpoint_id,
                  tasks.c.group_id, tasks.c.state, tasks.c.attempts, tasks.c.error,
                  tasks.c.t_received, tasks.c.t_waiting, tasks.c.t_dispatched,
                  tasks.c.t_running, tasks.c.t_completed]


@dataclass(frozen=True)
class TaskFilter:
    """Which of a user's tasks to list. Ids are UUIDs; times are seconds since the
    epoch and bound when a task was received (``since`` included, ``until`` not)."""

    states: frozenset[str] = frozenset()
    endpoint_id: str | None = None
    function_id: str | None = None
    group_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    cursor: str | None = None
    _after: tuple[float, str] | None = field(default=None, init=False, repr=False,
                                             compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(self.states - set(lc.STATES))
        if unknown:
            raise InvalidRequest(f"state {unknown[0]!r} is not a task state (one of "
                                 f"{', '.join(lc.STATES)})", field="state")
        for name in ("endpoint_id", "function_id"):
            value = getattr(self, name)
            if value is not None:
                if not valid_uuid(value):
                    raise InvalidRequest(f"{name} {value!r} is not a UUID", field=name)
                object.__setattr__(self, name, str(uuid.UUID(value)))  # as stored
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidRequest(f"{name} is not a finite time", field=name)
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit is {self.limit}; it must be 1 to {MAX_LIMIT}",
                                 field="limit")
        if self.cursor is not None:
            object.__setattr__(self, "_after", decode_cursor(self.cursor))


@dataclass
class TaskPage:
    """One page of a listing, newest first; ``next_cursor`` is None on the last."""

    tasks: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(t_received: float, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{t_received!r}|{task_id}".encode()).decode("ascii")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        when, _, task_id = base64.urlsafe_b64decode(cursor.encode("ascii")).decode() \
            .partition("|")
        at = float(when)
    except (binascii.Error, UnicodeError, ValueError):
        at, task_id = math.nan, ""
    if not math.isfinite(at) or not valid_uuid(task_id):
        raise InvalidRequest("cursor is not one a listing returned (pass next_cursor "
                             "as it was given)", field="cursor")
    return at, task_id


def page_query(user_id: str, f: TaskFilter) -> Select[Any]:
    """The statement of a page: one row more than ``limit`` (to know there is more),
    newest received first, ties in the order of their ids, so that paging neither
    skips nor repeats a row."""
    q = select(*LISTED_COLUMNS).where(tasks.c.owner_id == user_id)
    if f.states:
        q = q.where(tasks.c.state.in_(sorted(f.states)))
    for col, value in ((tasks.c.endpoint_id, f.endpoint_id),
                       (tasks.c.function_id, f.function_id),
                       (tasks.c.group_id, f.group_id)):
        if value is not None:
            q = q.where(col == value)
    if f.since is not None:
        q = q.where(tasks.c.t_received >= f.since)
    if f.until is not None:
        q = q.where(tasks.c.t_received < f.until)
    if f._after is not None:
        at, task_id = f._after
        q = q.where(or_(tasks.c.t_received < at,
                        and_(tasks.c.t_received == at, tasks.c.task_id < task_id)))
    return q.order_by(tasks.c.t_received.desc(), tasks.c.task_id.desc()).limit(f.limit + 1)


def list_tasks(conn: Connection, user_id: str, f: TaskFilter) -> TaskPage:
    """A page of the user's tasks that match ``f`` (``page_query``)."""
    rows = [dict(r) for r in conn.execute(page_query(user_id, f)).mappings()]
    more = len(rows) > f.limit
    rows = rows[:f.limit]
    last = rows[-1] if more else None
    return TaskPage(rows, encode_cursor(last["t_received"], last["task_id"]) if last else None)
