"""Globus Auth introspection with globus-sdk's real client against registered responses."""

from __future__ import annotations

import globus_sdk
import pytest
import responses
from globus_sdk.transport import RetryConfig

from funcx_flows.errors import AuthenticationError, ServiceUnavailable
from funcx_flows.service.db import make_engine
from funcx_flows.service.globus_auth import GlobusAuthValidator
from funcx_flows.service.store import Store

URL = "https://auth.globus.org/v2/oauth2/token/introspect"
CLIENT = "56cc31b2-e84a-11f1-936a-02fc00000001"
SCOPE = "https://auth.globus.org/scopes/funcx-flows/all"
NOW = 1_800_000_000.0


def answer(**changes):
    base = {"active": True, "scope": f"openid {SCOPE}", "client_id": CLIENT,
            "username": "scientist@uni.edu", "sub": "abc", "exp": NOW + 600, "nbf": NOW - 60,
            "aud": ["auth.globus.org", CLIENT], "iss": "https://auth.globus.org"}
    return {**base, **changes}


@pytest.fixture
def validator(tmp_path, monkeypatch):
    monkeypatch.delenv("GLOBUS_SDK_ENVIRONMENT", raising=False)
    monkeypatch.delenv("GLOBUS_SDK_SERVICE_URL_AUTH", raising=False)
    responses.start()
    store = Store(make_engine(f"sqlite:///{tmp_path / 's.db'}"))
    store.create_schema()
    clock = [NOW]
    auth = globus_sdk.ConfidentialAppAuthClient(CLIENT, "secret",
                                                retry_config=RetryConfig(max_retries=0))
    v = GlobusAuthValidator(CLIENT, "secret", SCOPE, store, cache_s=30,
                            clock=lambda: clock[0], auth_client=auth)
    yield v, clock
    responses.stop()
    responses.reset()


def test_a_valid_token_maps_to_a_user_and_is_cached(validator):
    v, clock = validator
    responses.add(responses.POST, URL, json=answer())
    user = v.user_for("tok")
    assert user.name == "globus:scientist@uni.edu"
    assert v.user_for("tok") == user and len(responses.calls) == 1  # cached
    assert "include=identity_set" in responses.calls[0].request.body
    clock[0] += 31
    assert v.user_for("tok") == user and len(responses.calls) == 2  # cache expired


@pytest.mark.parametrize(("changes", "why"), [
    ({"active": False}, "not active"),
    ({"exp": NOW - 1}, "expired"),
    ({"nbf": NOW + 60}, "not valid yet"),
    ({"scope": "openid email"}, "lacks the scope"),
    ({"aud": ["auth.globus.org", "someone-else"]}, "audience"),
])
def test_invalid_tokens_are_refused_with_the_reason(validator, changes, why):
    v, _ = validator
    responses.add(responses.POST, URL, json=answer(**changes))
    with pytest.raises(AuthenticationError, match=why):
        v.user_for("bad")


def test_a_cached_user_never_outlives_the_token(validator):
    v, clock = validator
    responses.add(responses.POST, URL, json=answer(exp=NOW + 10))
    v.user_for("short")
    clock[0] += 11
    responses.replace(responses.POST, URL, json=answer(active=False))
    with pytest.raises(AuthenticationError, match="not active"):
        v.user_for("short")


def test_globus_trouble_is_a_503_not_a_401(validator):
    v, _ = validator
    responses.add(responses.POST, URL, status=500, json={"errors": [{"code": "boom"}]})
    with pytest.raises(ServiceUnavailable, match="Globus Auth"):
        v.user_for("tok")
