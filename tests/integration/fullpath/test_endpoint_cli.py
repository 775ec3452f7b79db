"""Endpoint life-cycle errors through the real CLI against a real service."""


def test_start_of_a_running_endpoint_is_refused(stack, endpoint):
    out = stack.endpoint_cli("start", "ep", check=False)
    assert out.returncode != 0
    assert "already running" in (out.stdout + out.stderr).lower()
    assert "Traceback" not in out.stderr


def test_stop_of_an_endpoint_that_is_not_running(stack):
    stack.endpoint_cli("configure", "idle")
    out = stack.endpoint_cli("stop", "idle", check=False)
    assert out.returncode != 0
    assert "not running" in (out.stdout + out.stderr).lower()
    assert "Traceback" not in out.stderr


def test_list_shows_the_running_endpoint(stack, endpoint):
    out = stack.endpoint_cli("list")
    assert "ep" in out.stdout


def test_list_and_status_print_json_for_scripts(stack, endpoint):
    import json

    listed = {e["name"]: e for e in json.loads(stack.endpoint_cli("list", "--json").stdout)
              ["endpoints"]}
    assert listed["ep"]["local"] == "running" and listed["ep"]["service"] == "online"
    status = json.loads(stack.endpoint_cli("status", "ep", "--json").stdout)
    assert status["running"] and status["status"]["workers_total"] >= 1
