"""The dashboard's task listing: the store's (``Store.list_tasks``, as GET /v1/tasks
reads it), paged through for the pages that want more than one page's worth.

Tasks are never shared (the API shows a task to its submitter only), so the
listing is the caller's own rows and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from funcx_flows.service.store import Store, TaskFilter, User
from funcx_flows.service.store.listing import MAX_LIMIT


def list_tasks(store: Store, user: User, *, states: Iterable[str] = (),
               endpoint_id: str | None = None, function_id: str | None = None,
               since: float | None = None, until: float | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    """The user's newest ``limit`` tasks that match, newest first (``InvalidRequest``
    for a filter the API would refuse)."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(out) < limit:
        page = store.list_tasks(user, TaskFilter(
            states=frozenset(states), endpoint_id=endpoint_id, function_id=function_id,
            since=since, until=until, limit=min(MAX_LIMIT, limit - len(out)), cursor=cursor))
        out.extend(page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            break
    return out
