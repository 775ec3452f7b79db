"""Request-scoped dependencies: the service's parts and the authenticated user."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse

from funcx_flows.errors import AuthenticationError, FuncxFlowsError, RateLimited
from funcx_flows.service.dispatcher import Dispatcher
from funcx_flows.service.globus_auth import GlobusAuthValidator
from funcx_flows.service.hub import Hub
from funcx_flows.service.settings import ServiceSettings
from funcx_flows.service.store import Store, User

log = logging.getLogger(__name__)


@dataclass
class RateLimiter:
    """A token bucket per user: ``rate`` requests per second, bursts of 5 s worth."""

    rate: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, user_id: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        burst = self.rate * 5
        with self._lock:
            tokens, last = self._buckets.get(user_id, (burst, now))
            tokens = min(burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[user_id] = (tokens, now)
                raise RateLimited(
                    f"limit of {self.rate:g} requests per second per user exceeded",
                    limit="rate_limit_per_s", retry_after_s=round((1 - tokens) / self.rate, 3))
            self._buckets[user_id] = (tokens - 1, now)


@dataclass
class Parts:
    settings: ServiceSettings
    store: Store
    hub: Hub
    dispatcher: Dispatcher
    limiter: RateLimiter
    globus: GlobusAuthValidator | None = None


async def parts_dep(request: Request) -> Parts:
    """As a FastAPI dependency: async, so it costs no worker-thread hop."""
    return parts(request)


def parts(request: Request) -> Parts:
    p: Parts = request.app.state.parts
    return p


def bearer(header: str | None) -> str:
    if not header:
        raise AuthenticationError("missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("malformed Authorization header (expected 'Bearer <token>')")
    return token.strip()


def authenticate(p: Parts, header: str | None) -> User:
    token = bearer(header)
    user = p.store.authenticate(token)
    if user is None and p.globus is not None:
        user = p.globus.user_for(token)  # raises AuthenticationError saying why not
    if user is None:
        raise AuthenticationError("invalid or revoked token")
    replicas = p.dispatcher.replicas
    if replicas is not None and p.settings.rate_limit_per_s > 0:
        # counted in the database, once for all replicas
        replicas.state.take_request(user.user_id, p.settings.rate_limit_per_s)
    else:
        p.limiter.check(user.user_id)
    return user


async def current_user(request: Request) -> User:
    """Async on purpose: a worker-thread hop per dependency costs more than the
    lookup (one indexed read)."""
    try:
        return authenticate(parts(request), request.headers.get("authorization"))
    except AuthenticationError as exc:
        _refusals.note(request.client.host if request.client else "?", exc.message)
        raise


@dataclass
class RefusalLog:
    """Refused credentials, logged with the client's address (through a proxy, the
    one X-Forwarded-For names: see forwarded_allow_ips), at most once per address
    every ``every_s`` seconds, with how many were refused meanwhile."""

    every_s: float = 10.0
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def note(self, address: str, why: str) -> None:
        now = time.monotonic()
        at, count = self._last.get(address, (-self.every_s, 0))
        if now - at < self.every_s:
            self._last[address] = (at, count + 1)
            return
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[address] = (now, 0)
        more = f" ({count} more since the last report)" if count else ""
        log.warning("refused a request from %s: %s%s", address, why, more)


_refusals = RefusalLog()


CLOSE_POLICY = 1008  # WebSocket close code: a policy violation (a refusal, a revoked token)


async def refuse(websocket: WebSocket, err: FuncxFlowsError) -> None:
    """Refuse a WebSocket at its handshake: an HTTP answer with the error body, as a
    REST route gives, where the server can send one; else a close naming the error."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(
            status_code=err.http_status, content={"error": {
                "code": err.code, "message": err.message, "details": {}}}))
    else:
        await websocket.close(code=CLOSE_POLICY, reason=f"{err.code}: {err.message}"[:120])
