"""The dashboard's pages under /ui: sign-in, endpoints, tasks, functions, triggers,
activity. Read-only; every page answers what the API would answer its user."""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from funcx_flows.errors import AuthenticationError, FuncxFlowsError, InvalidRequest
from funcx_flows.service import lifecycle as lc
from funcx_flows.service.api.deps import parts
from funcx_flows.service.api.fields import canonical_id
from funcx_flows.service.store import TaskFilter, User
from funcx_flows.service.ui import activity, views
from funcx_flows.service.ui.globus_login import LOGIN_S
from funcx_flows.service.ui.session import COOKIE, SESSION_S, Session
from funcx_flows.service.ui.state import ui_state

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent


@functools.cache
def templates() -> Jinja2Templates:
    """The pages' templates, loaded at the first page (Jinja2 is ~3 MB in a service
    process that may never serve one)."""
    from fastapi.templating import Jinja2Templates

    found = Jinja2Templates(directory=HERE / "templates")
    found.env.filters["ago"] = views.ago
    found.env.filters["clock"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S",
                                                         time.localtime(t)) if t else ""
    found.env.filters["secs"] = lambda s: "" if s is None else (
        f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s")
    return found


router = APIRouter(include_in_schema=False)
LISTED = 200  # tasks on one page of the listing


class SignInNeeded(Exception):
    """The browser has no valid session: it goes to the sign-in page."""


def session_of(request: Request) -> Session:
    return ui_state(request).sessions.decode(request.cookies.get(COOKIE))


def signed_in(request: Request) -> User:
    """The user of the browser's session (checked as the API checks a token)."""
    try:
        return ui_state(request).sessions.user(session_of(request))
    except AuthenticationError as exc:
        raise SignInNeeded(exc.message) from exc


def render(request: Request, name: str, user: User | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    return templates().TemplateResponse(request, name, {
        "user": user, "states": lc.STATES, "globus": ui_state(request).globus_login is not None,
        **context}, status_code=status)


def page(request: Request, name: str, build: Any, *args: Any) -> Response:
    """Render ``name`` with what ``build(p, user, *args)`` reads; a domain error (an
    unknown or foreign id: NotFound) as a page with the API's status."""
    user = signed_in(request)
    try:
        data = build(parts(request), user, *args)
    except FuncxFlowsError as exc:
        return render(request, "error.html", user, exc.http_status, error=exc)
    return render(request, name, user, data=data)


@router.get("/ui")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/endpoints", status_code=303)


@router.get("/ui/login")
def login_form(request: Request, next: str = "/ui/endpoints", problem: str = ""
               ) -> HTMLResponse:
    return render(request, "login.html", None, next=safe_next(next), problem=problem)


@router.post("/ui/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = safe_next((form.get("next") or ["/ui/endpoints"])[0])
    try:
        if not token:
            raise AuthenticationError("paste a funcx-flows token (funcx-flows token create)")
        session = await asyncio.to_thread(ui_state(request).sessions.for_token, token)
    except AuthenticationError as exc:
        return render(request, "login.html", None, 401, next=target, problem=exc.message)
    return start_session(request, session, target)


def start_session(request: Request, session: Session, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, ui_state(request).sessions.encode(session),
                        max_age=int(SESSION_S), path="/ui", secure=True, httponly=True,
                        samesite="lax")
    return response


@router.post("/ui/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui", secure=True, httponly=True, samesite="lax")
    return response


def safe_next(target: str) -> str:
    """Only a dashboard path: never another site (an open redirect)."""
    return target if target.startswith("/ui/") and not target.startswith("/ui//") \
        else "/ui/endpoints"


def login_redirect(request: Request, exc: SignInNeeded) -> Response:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/ui/login?next={target}&problem={quote(str(exc))}",
                            status_code=303)


@router.get("/ui/endpoints")
def endpoints_page(request: Request) -> Response:
    return page(request, "endpoints.html", views.endpoint_rows)


@router.get("/ui/endpoints/{endpoint_id}")
def endpoint_page(request: Request, endpoint_id: str) -> Response:
    return page(request, "endpoint.html", views.endpoint_detail, canonical_id(endpoint_id))


@router.get("/ui/tasks")
def tasks_page(request: Request, state: str = "", endpoint: str = "", function: str = "",
               since_min: str = "", cursor: str = "") -> Response:
    def build(p: Any, user: User) -> dict[str, Any]:
        if state and state not in lc.STATES:
            raise InvalidRequest(f"state {state!r} is not one of {', '.join(lc.STATES)}")
        try:
            minutes = float(since_min) if since_min else None
        except ValueError:
            minutes = math.nan
        if minutes is not None and not (math.isfinite(minutes) and minutes >= 0):
            raise InvalidRequest(f"since_min {since_min!r} is not a number of minutes")
        listing = p.store.list_tasks(user, TaskFilter(
            states=frozenset({state} if state else ()), endpoint_id=endpoint or None,
            function_id=function or None, limit=LISTED, cursor=cursor or None,
            since=None if minutes is None else time.time() - 60 * minutes))
        filters = {"state": state, "endpoint": endpoint, "function": function,
                   "since_min": since_min}
        older = None if listing.next_cursor is None else "/ui/tasks?" + urlencode(
            {**{k: v for k, v in filters.items() if v}, "cursor": listing.next_cursor})
        return {"tasks": listing.tasks, "filters": filters, "older": older,
                "endpoints": {e["endpoint_id"]: e["name"]
                              for e in p.store.list_endpoints(user, True)}}
    return page(request, "tasks.html", build)


@router.get("/ui/tasks/{task_id}")
def task_page(request: Request, task_id: str) -> Response:
    return page(request, "task.html", views.task_detail, canonical_id(task_id))


@router.get("/ui/functions")
def functions_page(request: Request) -> Response:
    return page(request, "functions.html", views.function_rows)


@router.get("/ui/triggers")
def triggers_page(request: Request) -> Response:
    reports = ui_state(request).reports
    return page(request, "triggers.html", lambda p, user: reports.of(user.user_id))


@router.get("/ui/activity")
def activity_page(request: Request, window: str = "hour") -> Response:
    return page(request, "activity.html", activity.build, window)


LOGIN_STATE = "fxf_login_state"


@router.get("/ui/login/globus")
def globus_login(request: Request, next: str = "/ui/endpoints") -> Response:
    """To Globus Auth, with a random state that the callback must bring back."""
    login = ui_state(request).globus_login
    if login is None:
        return render(request, "error.html", None, 404, error=InvalidRequest(
            "Globus Auth is not configured on this service (globus_client_id)"))
    state = secrets.token_urlsafe(24)
    url = login.authorize_url(str(request.url_for("globus_callback")), state)
    response = RedirectResponse(url, status_code=303)
    until = time.time() + LOGIN_S
    signed = ui_state(request).sessions.encode(Session("login", f"{state} {safe_next(next)}",
                                                       until))
    response.set_cookie(LOGIN_STATE, signed, max_age=int(LOGIN_S), path="/ui/login",
                        secure=True, httponly=True, samesite="lax")
    return response


@router.get("/ui/login/globus/callback", name="globus_callback")
def globus_callback(request: Request, code: str = "", state: str = "", error: str = ""
                    ) -> Response:
    ui = ui_state(request)
    try:
        if ui.globus_login is None:
            raise AuthenticationError("Globus Auth is not configured on this service")
        if error:
            raise AuthenticationError(f"Globus Auth said: {error}")
        refused = AuthenticationError("this sign-in was not started here, or took longer "
                                      f"than {LOGIN_S / 60:.0f} minutes: start it again")
        try:
            kept = ui.sessions.decode(request.cookies.get(LOGIN_STATE))
        except AuthenticationError as exc:
            raise refused from exc
        expected, _, target = kept.subject.partition(" ")
        if kept.kind != "login" or not code or not secrets.compare_digest(expected, state):
            raise refused
        user, expires = ui.globus_login.user_for_code(
            str(request.url_for("globus_callback")), code)
    except FuncxFlowsError as exc:
        return render(request, "login.html", None, exc.http_status, next="/ui/endpoints",
                      problem=exc.message)
    name = user.name.removeprefix("globus:")
    session = Session("globus", name, min(expires, time.time() + SESSION_S),
                      tuple(sorted(user.groups)))
    response = start_session(request, session, target)
    response.delete_cookie(LOGIN_STATE, path="/ui/login", secure=True, httponly=True,
                           samesite="lax")
    return response
