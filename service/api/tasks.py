"""Tasks: submit a batch, list, get one, fetch many, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from funcx_flows.errors import Conflict, InvalidRequest, PayloadTooLarge
from funcx_flows.service.api.deps import Parts, current_user, parts_dep
from funcx_flows.service.api.fields import Id, parse_time
from funcx_flows.service.api.models import (
    Cancelled,
    TaskIds,
    TaskIdsOut,
    TaskList,
    TaskPageOut,
    TaskRecord,
    TasksIn,
    TaskSummary,
    decode_b64,
)
from funcx_flows.service.api.records import task_record, task_summary
from funcx_flows.service.lifecycle import TERMINAL
from funcx_flows.service.store import TaskFilter, User

router = APIRouter(tags=["tasks"])
UserDep = Annotated[User, Depends(current_user)]
PartsDep = Annotated[Parts, Depends(parts_dep)]


INLINE_TASKS = 8


@router.post("/tasks", response_model=TaskIdsOut)
async def submit_tasks(body: TasksIn, user: UserDep, p: PartsDep) -> TaskIdsOut:
    return TaskIdsOut(task_ids=await accept_tasks(p, user, body))


async def accept_tasks(p: Parts, user: User, body: TasksIn) -> list[str]:
    """Store a batch durably and send it on; the REST route and the result stream's
    ``submit`` op share it. Async: a small batch commits on the loop (faster than a
    worker-thread hop); a large one in a worker thread, so that the loop keeps serving."""
    s = p.settings
    if len(body.tasks) > s.max_batch_tasks:
        raise PayloadTooLarge(
            f"a batch holds at most {s.max_batch_tasks} tasks; got {len(body.tasks)}",
            limit="max_batch_tasks")
    items: list[dict[str, Any]] = []
    for i, t in enumerate(body.tasks):
        payload = (t.payload if isinstance(t.payload, bytes)
                   else decode_b64(t.payload, f"tasks[{i}].payload"))
        if len(payload) > s.max_payload_bytes:
            raise PayloadTooLarge(
                f"tasks[{i}].payload is {len(payload)} bytes; the limit is "
                f"{s.max_payload_bytes}", limit="max_payload_bytes", index=i)
        items.append({
            "task_id": t.task_id, "function_id": t.function_id, "endpoint_id": t.endpoint_id,
            "group_id": t.group_id, "payload": payload,
            "resources": t.resources.model_dump() if t.resources else None,
        })
    online = p.dispatcher.online_endpoints()
    ids: list[str]
    if len(items) <= INLINE_TASKS:
        ids, to_send, _ = p.store.submit(user, items, online, s.max_tasks_in_flight)
    else:
        ids, to_send, _ = await asyncio.to_thread(p.store.submit, user, items, online,
                                                  s.max_tasks_in_flight)
    p.dispatcher.send_tasks_threadsafe(to_send)  # (memoized answers: published by the store)
    elsewhere = {it["endpoint_id"] for it in items} - online
    if elsewhere:  # with replicas: the one that holds the link claims them
        p.dispatcher.stored_waiting(elsewhere)
    return ids


@router.get("/tasks", response_model=TaskPageOut, response_model_exclude_none=True)
def list_tasks(
    user: UserDep, p: PartsDep,
    state: Annotated[list[str], Query(description="one or more task states")] = [],  # noqa: B006
    endpoint_id: Annotated[str | None, Query(max_length=64)] = None,
    function_id: Annotated[str | None, Query(max_length=64)] = None,
    group_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(
        max_length=64, description="received at or after: epoch seconds or ISO 8601")] = None,
    until: Annotated[str | None, Query(max_length=64, description="received before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TaskPageOut:
    """The caller's own tasks, newest first, a page at a time (``next_cursor``)."""
    states = frozenset(s for v in state for s in v.split(",") if s)
    page = p.store.list_tasks(user, TaskFilter(
        states=states, endpoint_id=endpoint_id or None, function_id=function_id or None,
        group_id=group_id or None, since=parse_time(since, "since"),
        until=parse_time(until, "until"), limit=limit, cursor=cursor or None))
    return TaskPageOut(tasks=[TaskSummary(**task_summary(r)) for r in page.tasks],
                       next_cursor=page.next_cursor)


@router.get("/tasks/{task_id}", response_model=TaskRecord)
def get_task(task_id: Id, user: UserDep, p: PartsDep) -> TaskRecord:
    return TaskRecord(**task_record(p.store.get_task(user, task_id)))


@router.post("/tasks/fetch", response_model=TaskList)
def fetch_tasks(body: TaskIds, user: UserDep, p: PartsDep) -> TaskList:
    return TaskList(tasks=[TaskRecord(**task_record(r))
                           for r in p.store.fetch(user, body.task_ids)])


@router.post("/tasks/cancel", response_model=Cancelled)
def cancel_tasks(body: TaskIds, user: UserDep, p: PartsDep) -> Cancelled:
    rows = p.store.cancel(user, body.task_ids)
    p.dispatcher.cancel_threadsafe(rows)
    return Cancelled(cancelled=[str(r["task_id"]) for r in rows])


@router.post("/tasks/{task_id}/cancel", response_model=TaskRecord)
def cancel_task(task_id: Id, user: UserDep, p: PartsDep) -> TaskRecord:
    rows = p.store.cancel(user, [task_id])
    if not rows:
        row = p.store.get_task(user, task_id)  # NotFound if not the caller's
        if row["state"] in TERMINAL:
            raise Conflict(f"task {task_id} already ended ({row['state']})", state=row["state"])
        raise InvalidRequest(f"task {task_id} could not be cancelled")
    p.dispatcher.cancel_threadsafe(rows)
    return TaskRecord(**task_record(p.store.get_task(user, task_id)))
