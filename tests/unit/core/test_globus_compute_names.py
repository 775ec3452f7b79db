"""Naming a Globus Compute endpoint, the extra it needs, and a missing login: all
found out before anything is sent."""

from __future__ import annotations

import sys

import pytest

from funcx_flows.errors import ConfigError
from funcx_flows.globus_compute import GlobusComputeEndpoint, as_endpoint

EP = "6f0f3a3c-36c4-4f5b-a7a3-2a2b2f8d0c11"


def test_the_gc_prefix_names_a_globus_compute_endpoint():
    assert as_endpoint(f"gc:{EP.upper()}") == GlobusComputeEndpoint(EP)
    assert str(GlobusComputeEndpoint(EP)) == f"gc:{EP}"
    assert as_endpoint("hpc") == "hpc"
    assert as_endpoint(EP) == EP  # a bare UUID stays a funcx-flows endpoint id
    with pytest.raises(ConfigError, match="named by its UUID, not 'polaris'"):
        as_endpoint("gc:polaris")
    with pytest.raises(TypeError, match="GlobusComputeEndpoint"):
        as_endpoint(3)  # type: ignore[arg-type]


def test_without_the_extra_the_error_names_it(monkeypatch):
    from funcx_flows.sdk.globus_compute import GlobusComputeBackend

    monkeypatch.setitem(sys.modules, "globus_compute_sdk", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'funcx-flows\[globus-compute\]'"):
        GlobusComputeBackend(GlobusComputeEndpoint(EP))


def test_without_credentials_or_a_stored_login_no_login_prompt_starts(monkeypatch, tmp_path):
    pytest.importorskip("globus_compute_sdk")
    from funcx_flows.sdk.globus_compute import make_client

    for var in ("GLOBUS_COMPUTE_CLIENT_ID", "GLOBUS_COMPUTE_CLIENT_SECRET",
                "GLOBUS_SDK_ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path / "gc"))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked for a login code"))
    with pytest.raises(ConfigError, match="no Globus Compute login: set GLOBUS_COMPUTE_CLIENT_ID"):
        make_client("local")
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "a secret without its id")
    with pytest.raises(ConfigError, match="GLOBUS_COMPUTE_CLIENT_ID"):
        make_client("local")


def test_our_service_options_with_a_globus_compute_endpoint_are_refused():
    pytest.importorskip("prefect")
    from funcx_flows.prefect._remote import Target

    assert Target(f"gc:{EP}").endpoint == GlobusComputeEndpoint(EP)
    with pytest.raises(ValueError, match="credentials are the Globus Compute SDK's"):
        Target(GlobusComputeEndpoint(EP), token="ours")


def test_flows_naming_globus_compute_endpoints_import_without_the_extra():
    import subprocess

    code = ("import sys; sys.modules['globus_compute_sdk'] = None\n"
            "from funcx_flows import EndpointTaskRunner, remote_map, remote_task\n"
            f"remote_task(len, endpoint='gc:{EP}'); EndpointTaskRunner('gc:{EP}')\n"
            "assert 'globus_sdk.services.compute' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
