"""Globus Auth introspection with globus-sdk's real client against registered responses."""

from __future__ import annotations

import globus_sdk
import pytest
import responses
from globus_sdk.testing import load_response
from globus_sdk.transport import RetryConfig

from funcx_flows.errors import (
    AuthenticationError,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
)
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
    with pytest.raises(ServiceUnavailable, match="Globus Auth") as info:
        v.user_for("tok")
    assert isinstance(info.value.__cause__, globus_sdk.GlobusAPIError)  # kept for the log


def test_globus_group_members_use_what_is_shared_with_the_group(validator):
    v, _ = validator
    v.groups = True
    responses.add(responses.POST, URL, json=answer())
    load_response(globus_sdk.ConfidentialAppAuthClient.oauth2_get_dependent_tokens,
                  case="groups")
    group_ids = load_response(globus_sdk.GroupsClient.get_my_groups).metadata["group_ids"]
    member = v.user_for("tok")
    assert member.groups == frozenset(group_ids)
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer groupsToken"

    store = v.store
    owner = store.ensure_user("alice")
    outsider = store.ensure_user("globus:someone-else")
    fid, _ = store.register_function(owner, "f", "", b"body")
    with pytest.raises(NotFound):
        store.get_function(member, fid)
    shared = store.set_sharing(owner, "function", fid, public=False, user_names=[],
                               groups=[group_ids[0]])
    assert shared == {"public": False, "users": [], "groups": [group_ids[0]]}
    assert store.get_function(member, fid)["owned"] is False
    with pytest.raises(NotFound):
        store.get_function(outsider, fid)
    with pytest.raises(PermissionDenied, match="only its owner"):
        store.delete_function(member, fid)
    store.set_sharing(owner, "function", fid, public=False, user_names=[], groups=[])
    with pytest.raises(NotFound):
        store.get_function(member, fid)


def test_no_groups_token_means_no_groups_not_no_access(validator):
    v, _ = validator
    v.groups = True
    responses.add(responses.POST, URL, json=answer())
    responses.add(responses.POST, "https://auth.globus.org/v2/oauth2/token", status=400,
                  json={"error": "invalid_grant"})
    user = v.user_for("tok")
    assert user.name == "globus:scientist@uni.edu" and user.groups == frozenset()
