"""The dashboard's parts of one service process, made on first use (after the
app's start-up has made the store and the settings)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from funcx_flows.service.api.deps import parts
from funcx_flows.service.ui.reports import TriggerReports
from funcx_flows.service.ui.session import Sessions, load_key
from funcx_flows.service.ui.ticker import StatusTicker, link_summary

_lock = threading.Lock()


@dataclass
class UiState:
    sessions: Sessions
    reports: TriggerReports
    ticker: StatusTicker
    globus_login: Any = None  # a GlobusLogin when Globus Auth is configured


def ui_state(conn: HTTPConnection) -> UiState:
    app = conn.app
    found: UiState | None = getattr(app.state, "ui", None)
    if found is not None:
        return found
    with _lock:
        found = getattr(app.state, "ui", None)
        if found is None:
            p = parts(conn)
            s = p.settings
            key = load_key(s.ui_session_secret, s.folder)
            globus = None
            if p.globus is not None:
                from funcx_flows.service.ui.globus_login import GlobusLogin

                globus = GlobusLogin(s.globus_client_id, s.globus_client_secret,
                                     s.globus_required_scope, p.globus)
            dispatcher = p.dispatcher
            found = UiState(Sessions(key, p.store), TriggerReports(p.store),
                            StatusTicker(lambda: link_summary(dispatcher)), globus)
            app.state.ui = found
    return found
