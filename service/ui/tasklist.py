"""The dashboard's task listing: the user's own tasks, newest first, filtered.

Tasks are never shared (the API shows a task to its submitter only), so the
listing is the caller's own rows and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from funcx_flows.service.db import tasks
from funcx_flows.service.store import Store, User

COLUMNS = [tasks.c.task_id, tasks.c.function_id, tasks.c.endpoint_id, tasks.c.group_id,
           tasks.c.state, tasks.c.attempts, tasks.c.error, tasks.c.t_received,
           tasks.c.t_waiting, tasks.c.t_dispatched, tasks.c.t_running, tasks.c.t_completed]


def list_tasks(store: Store, user: User, *, states: Iterable[str] = (),
               endpoint_id: str | None = None, function_id: str | None = None,
               since: float | None = None, until: float | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    q = select(*COLUMNS).where(tasks.c.owner_id == user.user_id)
    wanted = sorted(states)
    if wanted:
        q = q.where(tasks.c.state.in_(wanted))
    if endpoint_id:
        q = q.where(tasks.c.endpoint_id == endpoint_id)
    if function_id:
        q = q.where(tasks.c.function_id == function_id)
    if since is not None:
        q = q.where(tasks.c.t_received >= since)
    if until is not None:
        q = q.where(tasks.c.t_received < until)
    q = q.order_by(tasks.c.t_received.desc(), tasks.c.task_id).limit(limit)
    with store.tx.read() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]
