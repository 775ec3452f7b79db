"""The Globus Compute backend with the unmodified SDK against the stand-in and a
real RabbitMQ, below Prefect: what travels, and how errors come back."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from gc_standin import EP, SCOPE

from funcx_flows.errors import RemoteExecutionError
from funcx_flows.globus_compute import GlobusComputeEndpoint
from funcx_flows.sdk.globus_compute import GlobusComputeBackend


def double(x):
    return {"value": 2 * x, "pid": os.getpid(), "thread": threading.current_thread().name}


def fails(x):
    raise ValueError(f"cannot handle {x}")


def test_backend_runs_calls_through_the_sdk_executor(gc):
    backend = GlobusComputeBackend(GlobusComputeEndpoint(EP, environment="local"))
    try:
        futures = [backend.submit(double, i) for i in range(5)]
        results = [f.result(timeout=60) for f in futures]
        assert [r["value"] for r in results] == [0, 2, 4, 6, 8]
        # run by the stand-in's workers, not here
        assert all(r["thread"].startswith("gc-standin-worker") for r in results)
        assert all(f.task_id in gc.tasks for f in futures)
        bad = backend.submit(fails, 7)
        with pytest.raises(RemoteExecutionError) as info:
            bad.result(timeout=60)
        assert info.value.remote_type == "ValueError"
        assert info.value.message == "cannot handle 7"
        assert "Traceback" in info.value.remote_traceback
        assert backend.endpoint_state() == "online"
    finally:
        backend.close()
    # the SDK logged in with the client identity and asked for a result queue
    assert gc.calls.token_grants[0]["grant_type"] == ["client_credentials"]
    assert all(s["create_queue"] for s in gc.calls.submits)
    assert ("GET", "/v2/get_amqp_result_connection_url") in gc.calls.requests


def test_the_sdks_stored_login_is_used_without_client_credentials(gc, monkeypatch, tmp_path):
    """A user who logged in with the SDK once: its token storage is read as the SDK
    reads it (namespace ``user/<environment>``), no prompt, no client identity."""
    import time

    from globus_sdk.token_storage import SQLiteTokenStorage, TokenStorageData

    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID")
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_SECRET")
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked for a login code"))
    identity, expires = str(uuid.uuid4()), int(time.time()) + 3600
    storage = SQLiteTokenStorage(tmp_path / "storage.db", namespace="user/local")
    # what a login leaves: Compute's token and Auth's (openid), with refresh tokens
    storage.store_token_data_by_resource_server({rs: TokenStorageData(
        resource_server=rs, identity_id=identity, scope=scope, access_token=gc.issue_token(),
        refresh_token="refresh-" + rs, expires_at_seconds=expires, token_type="Bearer")
        for rs, scope in (("funcx_service", SCOPE), ("auth.globus.org", "openid"))})
    storage.close()
    grants = len(gc.calls.token_grants)
    backend = GlobusComputeBackend(GlobusComputeEndpoint(EP, environment="local"))
    try:
        assert backend.submit(double, 21).result(timeout=60)["value"] == 42
    finally:
        backend.close()
    assert len(gc.calls.token_grants) == grants  # no client-credentials grant this time
