"""Globus Auth's browser login for the dashboard (the authorization code grant).

/ui/login/globus sends the browser to Globus Auth with a random ``state`` that
is also kept in a short-lived signed cookie; Globus sends it back to
/ui/login/globus/callback with a code, which the service exchanges (as the
confidential client it already is for token introspection) for an access token
for its own scope. That token is then judged exactly as a bearer token on the
API is (``GlobusAuthValidator.user_for``: active, scope, audience, groups), so a
browser signs in as the user the API would see with that token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import globus_sdk  # (lazy itself: its services load when first named)

from funcx_flows.errors import AuthenticationError, ServiceUnavailable
from funcx_flows.service.globus_auth import GlobusAuthValidator
from funcx_flows.service.store import User

if TYPE_CHECKING:
    from globus_sdk.services.auth.flow_managers import GlobusAuthorizationCodeFlowManager

LOGIN_S = 600.0  # how long a sign-in may take at Globus before it must start over


@dataclass
class GlobusLogin:
    client_id: str
    client_secret: str
    scope: str
    validator: GlobusAuthValidator

    def __post_init__(self) -> None:
        self.auth = globus_sdk.ConfidentialAppAuthClient(self.client_id, self.client_secret)

    def _flow(self, redirect_uri: str, state: str) -> GlobusAuthorizationCodeFlowManager:
        # imported here: it loads Globus Auth's client, JWT and cryptography (~90
        # modules, ~10 MB in every service process) for a sign-in few services offer
        from globus_sdk.services.auth.flow_managers import GlobusAuthorizationCodeFlowManager

        return GlobusAuthorizationCodeFlowManager(self.auth, redirect_uri,
                                                  requested_scopes=self.scope, state=state)

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        return self._flow(redirect_uri, state).get_authorize_url()

    def user_for_code(self, redirect_uri: str, code: str) -> tuple[User, float]:
        """The user a code from Globus stands for, and when their token expires."""
        try:
            answer = self._flow(redirect_uri, "").exchange_code_for_tokens(code)
        except globus_sdk.GlobusAPIError as exc:
            raise AuthenticationError(f"Globus Auth refused the sign-in: {exc.code}: "
                                      f"{exc.message}") from exc
        except globus_sdk.GlobusConnectionError as exc:
            raise ServiceUnavailable(f"Globus Auth is unreachable: {exc}") from exc
        for token in answer.by_resource_server.values():
            if self.scope in str(token.get("scope", "")).split():
                user = self.validator.user_for(str(token["access_token"]))
                expires = float(token.get("expires_at_seconds") or time.time() + 3600)
                return user, expires
        raise AuthenticationError(f"Globus Auth gave no token for the scope {self.scope}")
