"""The newest status report of each trigger process, per user (the dashboard's
Triggers page). A report replaces the process's previous one; a user keeps at
most ``limit`` processes, the one heard from longest ago making room."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from ..db import trigger_reports as reports


def put(conn: Connection, user_id: str, process: str, report: dict[str, Any], at: float,
        limit: int) -> None:
    """Keep ``report`` as the process's newest (one write transaction)."""
    replaced = conn.execute(update(reports).where(
        reports.c.user_id == user_id, reports.c.process == process).values(
        report=report, received_at=at)).rowcount
    if replaced:
        return
    count = conn.execute(select(func.count()).select_from(reports).where(
        reports.c.user_id == user_id)).scalar_one()
    if count >= limit:
        oldest = select(reports.c.process).where(reports.c.user_id == user_id).order_by(
            reports.c.received_at).limit(count - limit + 1).scalar_subquery()
        conn.execute(delete(reports).where(reports.c.user_id == user_id,
                                           reports.c.process.in_(oldest)))
    conn.execute(insert(reports).values(user_id=user_id, process=process, report=report,
                                        received_at=at))


def of(conn: Connection, user_id: str) -> list[dict[str, Any]]:
    """The user's reports, each with its ``received_at``, by process name."""
    rows = conn.execute(select(reports.c.report, reports.c.received_at).where(
        reports.c.user_id == user_id).order_by(reports.c.process)).all()
    return [{**row.report, "received_at": row.received_at} for row in rows]
