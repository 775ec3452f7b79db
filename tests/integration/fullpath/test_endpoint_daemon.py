"""The endpoint CLI's life cycle as a user runs it: configure, start (detached),
status, list, stop, delete; and a bad config that is named, not a traceback."""

from __future__ import annotations

import json

import yaml


def test_bad_config_key_is_named(stack):
    folder = stack.configure_endpoint("typo")
    (folder / "config.yaml").write_text(yaml.safe_dump({"max_worker_per_node": 2}))
    out = stack.endpoint_cli("start", "typo", check=False)
    assert out.returncode != 0
    assert "max_worker_per_node" in out.stderr and "unknown key" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (folder / "endpoint.json").exists()  # nothing registered


def test_start_of_an_unconfigured_endpoint_says_how(stack):
    out = stack.endpoint_cli("start", "never-configured", check=False)
    assert out.returncode != 0 and "funcx-endpoint configure" in out.stderr


def test_detached_daemon_life_cycle(stack):
    stack.configure_endpoint("daemon", {"max_workers_per_node": 1})
    out = stack.endpoint_cli("start", "daemon")
    assert "started" in out.stdout
    folder = stack.home / "endpoints" / "daemon"
    endpoint_id = json.loads((folder / "endpoint.json").read_text())["endpoint_id"]
    try:
        status = stack.endpoint_cli("status", "daemon")
        assert "running (pid" in status.stdout
        listing = stack.endpoint_cli("list")
        assert "daemon" in listing.stdout and endpoint_id in listing.stdout
        client = stack.client()
        try:
            from funcx_flows.sdk.executor import Executor

            with Executor(endpoint_id=endpoint_id, client=client) as ex:
                assert ex.submit(pow, 3, 4).result(timeout=60) == 81
        finally:
            client.close()
    finally:
        stopped = stack.endpoint_cli("stop", "daemon", check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stack.endpoint_cli("status", endpoint_id).stdout  # by its id too
    unasked = stack.endpoint_cli("delete", "daemon", check=False)  # no --yes, no tty answer
    assert unasked.returncode != 0 and folder.exists()
    assert stack.endpoint_cli("delete", endpoint_id, "--yes").returncode == 0
    assert not folder.exists()
    client = stack.client()
    try:
        assert endpoint_id not in {e["endpoint_id"] for e in client.list_endpoints()}
    finally:
        client.close()
