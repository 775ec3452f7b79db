"""A TransferClient for the Globus trigger, from a confidential client or stored user tokens.

Secrets never live in the triggers YAML: it names the environment variable that
holds the client secret, or the file that holds the user's tokens (refreshed
tokens are written back to that file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import globus_sdk

from funcx_flows.errors import ConfigError
from funcx_flows.triggers.config import GlobusAuthConfig


def transfer_client(auth: GlobusAuthConfig,
                    base_url: str | None = None) -> globus_sdk.TransferClient:
    """Build the client the trigger polls with (``base_url`` for tests and private deployments)."""
    authorizer = _token_authorizer(auth) if auth.token_file else _client_authorizer(auth)
    return globus_sdk.TransferClient(authorizer=authorizer, base_url=base_url)


def _client_authorizer(auth: GlobusAuthConfig) -> globus_sdk.ClientCredentialsAuthorizer:
    client_id = auth.client_id or os.environ.get(auth.client_id_env, "")
    secret = os.environ.get(auth.client_secret_env, "")
    if not client_id or not secret:
        raise ConfigError(
            f"no Globus credentials for the trigger: set auth.client_id (or ${auth.client_id_env}) "
            f"and ${auth.client_secret_env} for a confidential client, or auth.token_file for "
            "stored user tokens")
    client = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
    return globus_sdk.ClientCredentialsAuthorizer(
        client, scopes=globus_sdk.TransferClient.scopes.all)


def _token_authorizer(auth: GlobusAuthConfig) -> globus_sdk.authorizers.GlobusAuthorizer:
    path = Path(auth.token_file).expanduser()
    try:
        tokens: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"auth.token_file: no token file at {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"auth.token_file: {path} is not a readable JSON file: {exc}") from None
    refresh = tokens.get("refresh_token")
    access = tokens.get("access_token")
    if refresh:
        client_id = auth.client_id or os.environ.get(auth.client_id_env, "")
        if not client_id:
            raise ConfigError("auth.client_id: a refresh token needs the id of the (native) "
                              "app client it was issued to")

        def save(response: globus_sdk.OAuthTokenResponse) -> None:
            data = response.by_resource_server.get("transfer.api.globus.org")
            if data:
                path.write_text(json.dumps({**tokens, **data}))
                path.chmod(0o600)

        return globus_sdk.RefreshTokenAuthorizer(
            refresh, globus_sdk.NativeAppAuthClient(client_id), access_token=access,
            expires_at=tokens.get("expires_at_seconds"), on_refresh=save)
    if access:
        return globus_sdk.AccessTokenAuthorizer(access)
    raise ConfigError(f"auth.token_file: {path} has neither refresh_token nor access_token")
