"""The FastAPI application, built by a factory from validated settings."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from funcx_flows.errors import FuncxFlowsError, code_for_status
from funcx_flows.home import write_secret
from funcx_flows.memory import release_free_memory
from funcx_flows.service.api import (
    endpoints,
    functions,
    health,
    link,
    stream,
    tasks,
    tokens,
)
from funcx_flows.service.api.deps import Parts, RateLimiter
from funcx_flows.service.api.models import ErrorBody
from funcx_flows.service.db import make_engine, storage_unavailable
from funcx_flows.service.dispatcher import Dispatcher
from funcx_flows.service.hub import Hub
from funcx_flows.service.settings import ServiceSettings
from funcx_flows.service.store import Store
from funcx_flows.service.ui import install as install_dashboard
from funcx_flows.service.zmqlink import ServiceKeys

log = logging.getLogger(__name__)
# How often the service hands freed heap back to the OS: a trim takes 0.6-4 ms in a
# thread (GIL released) at a soak's load, and more often keeps RSS flat (memory.py).
TRIM_PERIOD_S = 5.0
CHECKPOINT_PERIOD_S = 0.5  # the SQLite WAL copied into the database (a background thread)
# How often open result streams are checked against tokens revoked elsewhere (the
# CLI, another replica); a revoke through this process's API closes them at once.
REVOCATION_CHECK_S = 1.0

def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None
           ) -> JSONResponse:
    return JSONResponse(status_code=status, content={
        "error": {"code": code, "message": message, "details": details or {}}})


def bootstrap_token(store: Store, settings: ServiceSettings) -> None:
    """On first start, create the local user and a token in ``<home>/token`` (0600)."""
    if store.user_count():
        return
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "local"
    user = store.ensure_user(name)
    _, token = store.create_token(user, "bootstrap")
    write_secret(settings.home / "token", token + "\n")
    log.info("created user %s and its token in %s", name, settings.home / "token")


def create_app(settings: ServiceSettings, public_url: str = "") -> FastAPI:
    """``public_url``: where clients reach this app; recorded in service.json at start."""
    store = Store(make_engine(settings.db_url))
    hub = Hub()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(store.create_schema)
        await asyncio.to_thread(bootstrap_token, store, settings)
        keys = await asyncio.to_thread(ServiceKeys.load_or_create, settings.folder)
        dispatcher = Dispatcher(settings, store, hub, keys)
        globus = None
        if settings.globus_client_id:
            from funcx_flows.service.globus_auth import GlobusAuthValidator

            globus = GlobusAuthValidator(settings.globus_client_id,
                                         settings.globus_client_secret,
                                         settings.globus_required_scope, store,
                                         groups=settings.globus_groups)
        app.state.parts = Parts(settings, store, hub, dispatcher,
                                RateLimiter(settings.rate_limit_per_s), globus)
        store.pin_connection()  # this thread: the event loop
        try:
            zmq_url = await dispatcher.start()
        except FuncxFlowsError as exc:  # a busy port: said in one line (service/__main__.py)
            app.state.startup_error = exc
            raise
        info = settings.folder / "service.json"
        if public_url:
            write_secret(info, json.dumps({"pid": os.getpid(), "url": public_url,
                                           "zmq_url": zmq_url, "started_at": time.time()}))
        purge = asyncio.create_task(_purge_loop(store, settings))
        trim = asyncio.create_task(_trim_loop())
        checkpoint = asyncio.create_task(_checkpoint_loop(store))
        revocations = asyncio.create_task(_revocation_loop(store, hub))
        try:
            yield
        finally:
            purge.cancel()
            trim.cancel()
            checkpoint.cancel()
            revocations.cancel()
            await dispatcher.stop()
            store.unpin_connection()
            if public_url:
                with contextlib.suppress(OSError, ValueError):
                    if json.loads(info.read_text()).get("pid") == os.getpid():
                        info.unlink()
            store.engine.dispose()

    app = FastAPI(title="funcx-flows", version="1", lifespan=lifespan,
                  responses={k: {"model": ErrorBody} for k in (401, 404, 409, 413, 422, 429, 503)})

    @app.exception_handler(FuncxFlowsError)
    async def _ours(request: Request, exc: FuncxFlowsError) -> JSONResponse:
        status = exc.http_status if 400 <= exc.http_status < 600 else 400
        return _error(status, exc.code, exc.message, _jsonable(exc.details))

    @app.exception_handler(DBAPIError)
    async def _storage(request: Request, exc: DBAPIError) -> JSONResponse:
        err = storage_unavailable(exc)
        log.error("database error on %s %s: %s", request.method, request.url.path,
                  err.details["cause"])
        response = _error(503, err.code, err.message, err.details)
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"location": ".".join(str(p) for p in e.get("loc", ())),
                     "problem": str(e.get("msg"))} for e in exc.errors()]
        first = problems[0] if problems else {"location": "body", "problem": "invalid"}
        return _error(422, "invalid_request",
                      f"invalid request: {first['location']}: {first['problem']}",
                      {"problems": problems[:20]})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # A body that does not parse is bad input like any other: 422, as documented.
        status = 422 if exc.status_code == 400 else exc.status_code
        code = code_for_status(status)
        return _error(status, code, str(exc.detail))

    for module in (health, tokens, functions, endpoints, tasks, stream, link):
        app.include_router(module.router, prefix="/v1")
    if settings.dashboard:
        install_dashboard(app)
    return app


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in details.items():
        out[k] = v if isinstance(v, str | int | float | bool | type(None) | list | dict) else str(v)
    return out


async def _purge_loop(store: Store, settings: ServiceSettings) -> None:
    period = min(3600.0, settings.result_retention_s / 4)
    while True:
        await asyncio.sleep(period)
        try:
            n = await asyncio.to_thread(store.purge, time.time() - settings.result_retention_s)
            if n:
                log.info("purged %d finished tasks older than the retention", n)
        except Exception:
            log.exception("purge failed")


async def _checkpoint_loop(store: Store, period: float = CHECKPOINT_PERIOD_S) -> None:
    """SQLite's WAL copied into the database in a worker thread (see Store.checkpoint)."""
    if store.engine.url.get_backend_name() != "sqlite":
        return
    failing = ""
    while True:
        await asyncio.sleep(period)
        try:
            await asyncio.to_thread(store.checkpoint)
        except Exception as exc:  # a full disk, say: the backstop still bounds the WAL
            if str(exc) != failing:  # said once, not twice a second
                log.warning("WAL checkpoint failed: %s", exc)
            failing = str(exc)
        else:
            if failing:
                log.info("WAL checkpoints work again")
            failing = ""


async def _revocation_loop(store: Store, hub: Hub, period: float = REVOCATION_CHECK_S) -> None:
    """Close the result streams of tokens revoked by someone else than this process.
    Looks back a few seconds past the last check (the revoker's clock may differ)."""
    since = time.time() - 5.0
    while True:
        await asyncio.sleep(period)
        if not hub.subscribers:
            since = time.time() - 5.0
            continue
        checked_at = time.time()
        try:
            digests = await asyncio.to_thread(store.revoked_since, since)
        except Exception as exc:  # the database is away: the next turn tries again
            log.warning("cannot check for revoked tokens: %s", exc)
            continue
        if digests and hub.close_tokens(set(digests), "the token was revoked"):
            log.info("closed result streams of %d revoked token(s)", len(digests))
        since = checked_at - 5.0


async def _trim_loop(period: float = TRIM_PERIOD_S) -> None:
    """Freed heap back to the OS now and then (a burst leaves tens of MB behind)."""
    while True:
        await asyncio.sleep(period)
        await asyncio.to_thread(release_free_memory)
