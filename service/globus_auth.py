"""Globus Auth as the identity provider: bearer tokens validated by introspection.

When the service is configured with a Globus confidential client, a token that
is not one of the service's own is introspected through globus-sdk and
accepted only if it is active, inside its nbf/exp window, carries the
service's scope and names the service's client in its audience. The identity
becomes a user ``globus:<username>``. Answers are cached briefly (Globus's own
resource servers cache ~30 s); an expired token is never served from cache.

With ``groups``, the user's Globus groups are looked up too (a dependent token
for Globus Groups, then ``get_my_groups``), so that things shared with a group
open to its members. The service's scope must then list the Groups scope as a
dependent scope; if Globus does not give one, the user simply has no groups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import globus_sdk

from funcx_flows.errors import AuthenticationError, ServiceUnavailable
from funcx_flows.service.store import Store, User

log = logging.getLogger(__name__)
GROUPS_RESOURCE_SERVER = "groups.api.globus.org"


class GlobusAuthValidator:
    def __init__(self, client_id: str, client_secret: str, required_scope: str, store: Store,
                 *, cache_s: float = 30.0, clock: Callable[[], float] = time.time,
                 auth_client: globus_sdk.ConfidentialAppAuthClient | None = None,
                 groups: bool = False) -> None:
        self.client_id = client_id
        self.required_scope = required_scope
        self.store = store
        self.cache_s = cache_s
        self.clock = clock
        self.auth = auth_client or globus_sdk.ConfidentialAppAuthClient(client_id, client_secret)
        self.groups = groups
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
                                     f"{exc.message}") from exc
        except globus_sdk.GlobusConnectionError as exc:
            raise ServiceUnavailable(f"Globus Auth is unreachable: {exc}") from exc
        verdict, until = self._judge(data, now)
        if isinstance(verdict, User) and self.groups:
            verdict = dataclasses.replace(verdict, groups=self._groups_of(token))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (verdict, until)
        if isinstance(verdict, User):
            return verdict
        raise AuthenticationError(verdict)

    def _groups_of(self, token: str) -> frozenset[str]:
        try:
            dependent = self.auth.oauth2_get_dependent_tokens(token).by_resource_server
            groups_token = dependent.get(GROUPS_RESOURCE_SERVER)
            if not groups_token:
                log.warning("Globus gave no Groups token for this user: no group shares")
                return frozenset()
            client = globus_sdk.GroupsClient(
                authorizer=globus_sdk.AccessTokenAuthorizer(groups_token["access_token"]))
            return frozenset(str(g["id"]) for g in client.get_my_groups())
        except (globus_sdk.GlobusAPIError, globus_sdk.GlobusConnectionError) as exc:
            log.warning("cannot look up the user's Globus groups: %s", exc)
            return frozenset()

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
