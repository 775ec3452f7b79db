"""What each dashboard page shows, read through the same store calls as the API.

Nothing here decides who may see what: every read is one of the store's
user-scoped reads that the REST routes make (``list_endpoints(user, shared)``,
``get_endpoint``, ``get_task``, ``list_functions``, the task listing), so a page
shows a user exactly what the API would answer them. Only names are looked up
beside them (the owners of things the user may already see).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from funcx_flows.errors import FuncxFlowsError
from funcx_flows.service import lifecycle as lc
from funcx_flows.service.api.deps import Parts
from funcx_flows.service.api.records import task_record
from funcx_flows.service.db import users
from funcx_flows.service.store import User
from funcx_flows.service.ui.tasklist import list_tasks

RECENT_FAILED = 20
TIMELINE = [("received", "t_received"), ("waiting", "t_waiting"),
            ("dispatched", "t_dispatched"), ("running", "t_running"),
            ("completed", "t_completed")]


def endpoint_rows(p: Parts, user: User) -> list[dict[str, Any]]:
    """The user's endpoints and those shared with them, with their link's status."""
    rows = p.store.list_endpoints(user, shared=True)
    ids = [r["endpoint_id"] for r in rows]
    links = p.dispatcher.link_infos(ids)  # one query for all
    depths = p.store.queue_depths_of(ids)  # and one more
    return [_endpoint(row, links[row["endpoint_id"]], depths[row["endpoint_id"]])
            for row in rows]


def _endpoint(row: dict[str, Any], link: dict[str, Any], depths: dict[str, int]
              ) -> dict[str, Any]:
    return {**link, "endpoint_id": row["endpoint_id"], "name": row["name"],
            "owned": row.get("owned", True),
            "last_seen": link.get("last_seen") or row.get("last_seen"),
            "tasks_waiting": depths.get(lc.WAITING, 0),
            "tasks_unfinished": sum(depths.values())}


def endpoint_detail(p: Parts, user: User, endpoint_id: str) -> dict[str, Any]:
    """One endpoint (NotFound unless the API would show it) and the user's recent
    failed tasks on it."""
    row = p.store.get_endpoint(user, endpoint_id)
    info = _endpoint(row, p.dispatcher.link_info(row["endpoint_id"]),
                     p.store.queue_depths(row["endpoint_id"]))
    info["failed"] = list_tasks(p.store, user, states={lc.FAILED}, endpoint_id=endpoint_id,
                                limit=RECENT_FAILED)
    return info


def task_detail(p: Parts, user: User, task_id: str) -> dict[str, Any]:
    row = p.store.get_task(user, task_id)
    record: dict[str, Any] = task_record(row)
    steps = []
    previous: float | None = None
    for name, col in TIMELINE:
        at = row.get(col)
        if at:
            steps.append({"step": name, "at": at,
                          "took": None if previous is None else at - previous})
            previous = at
    record["timeline"] = steps
    record["result"] = None  # bytes the service never opens; the API gives them
    return record


def function_rows(p: Parts, user: User) -> list[dict[str, Any]]:
    """Functions the user owns or may use: owner, sharing (of their own), last used
    (by the user's own tasks: tasks are never shared)."""
    rows = p.store.list_functions(user, shared=True)
    names = owner_names(p, {str(r["owner_id"]) for r in rows})
    out = []
    for r in rows:
        sharing: dict[str, Any] | None = None
        if r.get("owned", True):
            try:
                sharing = p.store.get_sharing(user, "function", r["function_id"])
            except FuncxFlowsError:
                sharing = None
        last = list_tasks(p.store, user, function_id=r["function_id"], limit=1)
        out.append({**r, "owner": names.get(str(r["owner_id"]), "?"), "sharing": sharing,
                    "last_used": last[0]["t_received"] if last else None})
    return out


def owner_names(p: Parts, user_ids: set[str]) -> dict[str, str]:
    if not user_ids:
        return {}
    with p.store.tx.read() as conn:
        rows = conn.execute(select(users.c.user_id, users.c.name)
                            .where(users.c.user_id.in_(sorted(user_ids))))
        return {str(r[0]): str(r[1]) for r in rows}


def ago(at: float | None, now: float | None = None) -> str:
    """'12 s ago', '3 min ago', '2 h ago', or 'never'."""
    if not at:
        return "never"
    d = max(0.0, (time.time() if now is None else now) - at)
    if d < 90:
        return f"{d:.0f} s ago"
    if d < 5400:
        return f"{d / 60:.0f} min ago"
    if d < 2 * 86400:
        return f"{d / 3600:.1f} h ago"
    return f"{d / 86400:.0f} days ago"
