"""The web dashboard at /ui (docs/dashboard.md): read-only pages for operators and
users, server-rendered, with server-sent events for live updates.

::

    browser --cookie--> pages.py --store's user-scoped reads--> what the API shows
            <--SSE----- live.py  <--hub (finished records, one publication per batch)
    trigger --POST /v1/triggers/status--> reports.py (latest report per process)
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from funcx_flows.service.ui import live, pages, reports
from funcx_flows.service.ui.pages import SignInNeeded, login_redirect


def install(app: FastAPI) -> None:
    """Add the dashboard's routes and the trigger report route to ``app``."""
    app.include_router(pages.router)
    app.include_router(live.router)
    app.include_router(reports.router, prefix="/v1")
    app.mount("/ui/static", StaticFiles(directory=pages.HERE / "static"), name="ui-static")

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        response: Response = login_redirect(request, exc)
        return response
