"""Globus Auth as the identity provider: bearer tokens validated by introspection.

When the service is configured with a Globus confidential client, a token that
is not one of the service's own is introspected through globus-sdk and
accepted only if it is active, inside its nbf/exp window, carries the
service's scope and names the service's client in its audience. The identity
becomes a user ``globus:<username>``. Answers are cached briefly (Globus's own
resource servers cache ~30 s); an expired token is never served from cache.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import globus_sdk

from funcx_flows.errors import AuthenticationError, ServiceUnavailable
from funcx_flows.service.store import Store, User


class GlobusAuthValidator:
    def __init__(self, client_id: str, client_secret: str, required_scope: str, store: Store,
                 *, cache_s: float = 30.0, clock: Callable[[], float] = time.time,
                 auth_client: globus_sdk.ConfidentialAppAuthClient | None = None) -> None:
        self.client_id = client_id
        self.required_scope = required_scope
        self.store = store
        self.cache_s = cache_s
        self.clock = clock
        self.auth = auth_client or globus_sdk.ConfidentialAppAuthClient(client_id, client_secret)
        self._cache: dict[str, tuple[User | str, float]] = {}
        self._lock = threading.Lock()

    def user_for(self, token: str) -> User:
        """The user of a Globus token, or ``AuthenticationError`` saying why not."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now < hit[1]:
            if isinstance(hit[0], User):
                return hit[0]
            raise AuthenticationError(hit[0])
        try:
            data: dict[str, Any] = dict(self.auth.oauth2_token_introspect(
                token, include="identity_set").data)
        except globus_sdk.GlobusAPIError as exc:
            raise ServiceUnavailable(f"Globus Auth refused the introspection: {exc.code}: "
                                     f"{exc.message}") from None
        except globus_sdk.GlobusConnectionError as exc:
            raise ServiceUnavailable(f"Globus Auth is unreachable: {exc}") from None
        verdict, until = self._judge(data, now)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (verdict, until)
        if isinstance(verdict, User):
            return verdict
        raise AuthenticationError(verdict)

    def _judge(self, data: dict[str, Any], now: float) -> tuple[User | str, float]:
        negative_until = now + min(self.cache_s, 5.0)
        if not data.get("active"):
            return "the Globus token is not active (expired or revoked)", negative_until
        exp, nbf = float(data.get("exp") or 0), float(data.get("nbf") or 0)
        if exp <= now:
            return "the Globus token has expired", negative_until
        if nbf > now:
            return "the Globus token is not valid yet", negative_until
        scopes = str(data.get("scope") or "").split()
        if self.required_scope not in scopes:
            return (f"the Globus token lacks the scope {self.required_scope}",
                    negative_until)
        aud = data.get("aud") or []
        if isinstance(aud, str):
            aud = [aud]
        if self.client_id not in aud:
            return "the Globus token was not issued for this service (audience)", negative_until
        name = str(data.get("username") or data.get("sub"))
        user = self.store.ensure_user(f"globus:{name}")
        return user, min(now + self.cache_s, exp)
