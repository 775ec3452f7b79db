"""Server-sent events: a viewer hears of its own tasks as they end, and of no one
else's (the real service and endpoint of dashstack.py; no browser needed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from dashstack import Dashboard

from funcx_flows.service.ui.session import COOKIE


def double(x: int) -> int:
    return 2 * x


def _cookie(dash: Dashboard, token: str) -> str:
    r = httpx.post(dash.url + "/ui/login", data={"token": token, "next": "/ui/tasks"})
    found = re.search(rf"{COOKIE}=([^;]+)", r.headers["set-cookie"])
    assert found
    return found.group(1)


@contextmanager
def _events(dash: Dashboard, token: str) -> Iterator[Iterator[tuple[str, Any]]]:
    """The events (name, data) of a viewer signed in with ``token``."""
    with httpx.stream("GET", dash.url + "/ui/events",
                      headers={"cookie": f"{COOKIE}={_cookie(dash, token)}"},
                      timeout=httpx.Timeout(60, connect=10)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")

        def events() -> Iterator[tuple[str, Any]]:
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    yield event, json.loads(line[6:])
        yield events()


def _next(events: Iterator[tuple[str, Any]], name: str) -> Any:
    return next(data for event, data in events if event == name)


def test_a_viewer_hears_of_its_own_tasks_and_endpoints_and_no_one_elses(
        dash: Dashboard) -> None:
    ep = dash.stack.endpoints["ep"]
    with dash.client(dash.token_a) as alice, dash.client(dash.token_b) as bob, \
            _events(dash, dash.token_a) as alice_hears, _events(dash, dash.token_b) as bob_hears:
        assert _next(alice_hears, "endpoints")[ep.endpoint_id]["state"] == "online"
        assert _next(bob_hears, "endpoints") == {}  # alice's endpoint is not bob's to see
        theirs = alice.run(double, 1, endpoint_id=ep.endpoint_id)
        heard = _next(alice_hears, "tasks")
        assert [e["task_id"] for e in heard] == [theirs]
        assert heard[0]["state"] == "success" and set(heard[0]) == {
            "task_id", "state", "endpoint_id", "function_id"}  # no result, no traceback
        # bob may use alice's endpoint once shared; his own task is the first he hears of
        alice.share("endpoint", ep.endpoint_id, users=["bob"])
        try:
            mine = bob.run(double, 2, endpoint_id=ep.endpoint_id)
            assert [e["task_id"] for e in _next(bob_hears, "tasks")] == [mine]
        finally:
            alice.share("endpoint", ep.endpoint_id)  # private again for the other tests
