"""What another user's code can reach on a shared endpoint (issue: a grantee read
the owner's API token from the workers' environment and from ``<home>/token``).

Real service, real endpoints, bob's functions on alice's shared endpoint."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stacks import MakeStack, user_client
from waiting import wait_until

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import Client
from funcx_flows.sdk.executor import Executor


def environment_secrets() -> dict[str, str | None]:
    import os

    return {k: os.environ.get(k) for k in ("FUNCX_FLOWS_TOKEN", "FUNCX_FLOWS_DATABASE_URL")}


def peek(paths: list[str]) -> dict[str, str]:
    """What of ``paths`` this task can read: the content, or the error's name."""
    out = {}
    for p in paths:
        try:
            with open(p) as f:
                out[p] = f.read()
        except OSError as exc:
            out[p] = type(exc).__name__
    return out


def where_am_i() -> dict[str, object]:
    import os
    import tempfile

    scratch = os.path.join(tempfile.gettempdir(), "scratch.txt")
    with open(scratch, "w") as f:  # a task can still write its scratch files
        f.write("ok")
    home = os.environ["HOME"]
    with open(os.path.join(home, "note"), "w") as f:
        f.write("mine")
    return {"home": sorted(os.listdir(home)), "pids": sorted(
        int(p) for p in os.listdir("/proc") if p.isdigit())}


@pytest.fixture
def shared(make_stack: MakeStack) -> Iterator[tuple[LocalStack, Client, Client]]:
    """A service; alice's token also in the environment the endpoint starts with
    (as `export FUNCX_FLOWS_TOKEN=...` would put it); bob."""
    stack = make_stack()
    stack.env["FUNCX_FLOWS_TOKEN"] = (stack.home / "token").read_text().strip()
    with stack.client() as alice, user_client(stack, "bob") as bob:
        yield stack, alice, bob


@pytest.mark.parametrize("provider", ["local", "inline"])
def test_workers_never_inherit_the_owners_token(shared, provider):
    stack, alice, bob = shared
    ep = stack.start_endpoint("shared", {"provider": provider, "max_workers_per_node": 1})
    alice.share("endpoint", ep.endpoint_id, users=["bob"])
    with Executor(endpoint_id=ep.endpoint_id, client=bob) as ex:
        assert ex.submit(environment_secrets).result(timeout=60) == {
            "FUNCX_FLOWS_TOKEN": None, "FUNCX_FLOWS_DATABASE_URL": None}


def test_a_sandboxed_endpoint_hides_the_owners_secrets(shared, need):
    need(shutil.which("bwrap") is not None, "bubblewrap (apt-get install bubblewrap)")
    stack, alice, bob = shared
    ep = stack.start_endpoint("shared", {"sandbox": "bwrap", "max_workers_per_node": 2})
    alice.share("endpoint", ep.endpoint_id, users=["bob"])
    secrets = [str(stack.home / "token"), str(ep.folder / "curve.json"),
               str(ep.folder / "manager-credentials.json"), str(ep.folder / "config.yaml")]
    assert all(os.path.exists(p) for p in secrets)
    with Executor(endpoint_id=ep.endpoint_id, client=bob) as ex:
        seen = ex.submit(peek, secrets).result(timeout=60)
        assert seen == {p: "FileNotFoundError" for p in secrets}
        inside = ex.submit(where_am_i).result(timeout=60)
        # a private, empty home (but for what the task wrote), and no process of the
        # endpoint in sight: only the sandbox's own
        assert "note" in inside["home"] and ".funcx_flows" not in inside["home"]
        assert max(inside["pids"]) < 10, inside
        assert list(ex.map(abs, range(-20, 0))) == list(range(20, 0, -1))
    # a cancel kills the sandboxed worker; its replacement runs the next task
    task_id = bob.run(time.sleep, 60, endpoint_id=ep.endpoint_id)
    wait_until(lambda: bob.get_task(task_id)["state"] == "running", what="the task to run")
    bob.cancel(task_id)
    wait_until(lambda: bob.get_task(task_id)["state"] == "cancelled", what="the cancel")
    with Executor(endpoint_id=ep.endpoint_id, client=bob) as ex:
        assert ex.submit(abs, -7).result(timeout=60) == 7
    # the owner's files are untouched, and nothing the task wrote reached them
    assert not (Path.home() / "note").exists() or (Path.home() / "note").read_text() != "mine"


def test_a_sandbox_that_cannot_work_is_refused_at_start(shared, need, tmp_path):
    need(shutil.which("bwrap") is not None, "bubblewrap (apt-get install bubblewrap)")
    stack, _, _ = shared
    stack.configure_endpoint("bad", {"sandbox": "bwrap", "sandbox_keep": [
        str(stack.home / "endpoints")]})
    out = stack.endpoint_cli("start", "bad", "--foreground", check=False)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "sandbox_keep" in out.stderr and "hides" in out.stderr, out.stderr
