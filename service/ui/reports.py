"""Trigger processes report their status here (POST /v1/triggers/status), and
the Triggers page shows each user the reports of their own triggers.

A report is a snapshot a trigger process sends every few seconds (folders
watched, files seen, runs by state, lag), so the latest one per (user, trigger
process) is all that is kept, in the database (service/store/reports.py): every
replica shows what any of them was sent, and a restart forgets nothing.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from funcx_flows.service.api.deps import current_user
from funcx_flows.service.api.fields import Name
from funcx_flows.service.store import Store, User

MAX_TRIGGERS = 200  # reports kept per user
STALE_S = 120.0  # a trigger not heard from this long is shown as silent

router = APIRouter(tags=["triggers"])


class TriggerStatus(BaseModel):
    name: Name = Field(max_length=200)
    kind: Annotated[str, Field(max_length=32)] = ""
    watching: list[Annotated[str, Field(max_length=4096)]] = Field(default=[], max_length=100)
    files_seen: int = Field(0, ge=0, le=2**62)
    files_waiting: int = Field(0, ge=0, le=2**62)
    runs: dict[Annotated[str, Field(max_length=32)], Annotated[int, Field(ge=0, le=2**62)]] = \
        Field(default={}, max_length=16)
    lag_s: float | None = Field(None, ge=0, le=1e9)
    problem: Annotated[str, Field(max_length=2000)] = ""


class TriggerReport(BaseModel):
    """One trigger process's status: its host and process, and each trigger's."""

    process: Name = Field(max_length=200)
    host: Annotated[str, Field(max_length=200)] = ""
    triggers: list[TriggerStatus] = Field(max_length=100)


class ReportAccepted(BaseModel):
    received_at: float


class TriggerReports:
    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, user: User, report: TriggerReport, now: float | None = None) -> float:
        at = time.time() if now is None else now
        self.store.put_trigger_report(user, report.process, report.model_dump(), at,
                                      MAX_TRIGGERS)
        return at

    def of(self, user_id: str, now: float | None = None) -> list[dict[str, Any]]:
        at = time.time() if now is None else now
        return [{**r, "silent": at - r["received_at"] > STALE_S}
                for r in self.store.trigger_reports(user_id)]


@router.post("/triggers/status", response_model=ReportAccepted)
def report_status(body: TriggerReport, request: Request,
                  user: Annotated[User, Depends(current_user)]) -> ReportAccepted:
    """A trigger process's status, for the dashboard's Triggers page (its owner's)."""
    from funcx_flows.service.ui.state import ui_state

    return ReportAccepted(received_at=ui_state(request).reports.put(user, body))
