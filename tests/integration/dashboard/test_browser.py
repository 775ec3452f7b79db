"""The dashboard in a real browser: sign in, find a failed task from its endpoint's
page and read its traceback, watch a task go from waiting to success without a
reload, and a second user who sees none of the first user's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dashstack import Dashboard, sign_in
from guards import outlives_test
from waiting import wait_until


def explode(tag: str) -> None:
    raise ValueError(f"detector frame {tag} is corrupt")


def double(x: int) -> int:
    return 2 * x


def _state(c: Any, task_id: str) -> str:
    return str(c.get_task(task_id)["state"])


def test_sign_in_find_a_failed_task_from_its_endpoint_and_read_the_traceback(
        dash: Dashboard, browser: Any, tmp_path: Path) -> None:
    ep = dash.stack.endpoints["ep"]
    with dash.client(dash.token_a) as c:
        task_id = c.run(explode, "frame-0042", endpoint_id=ep.endpoint_id)
        wait_until(lambda: _state(c, task_id) == "failed", 60, "the task to fail")
    page = sign_in(browser, dash.url, dash.token_a, tmp_path, "alice")
    try:
        row = page.locator(f'#endpoints tr[data-endpoint-id="{ep.endpoint_id}"]')
        assert row.locator(".state").inner_text() == "online"
        page.screenshot(path=tmp_path / "endpoints.png")
        row.locator("a").click()
        page.wait_for_url(f"**/ui/endpoints/{ep.endpoint_id}")
        page.screenshot(path=tmp_path / "endpoint.png")
        page.locator(f'#failed tr[data-task-id="{task_id}"] a').click()
        page.wait_for_url(f"**/ui/tasks/{task_id}")
        assert page.locator("#task-state").inner_text() == "failed"
        assert not page.locator("#traceback").is_visible()  # folded until asked for
        page.click("#show-traceback")
        traceback = page.locator("#traceback")
        traceback.wait_for(state="visible")
        text = traceback.inner_text()
        assert "ValueError: detector frame frame-0042 is corrupt" in text
        assert "in explode" in text  # the remote frame of the function
        page.screenshot(path=tmp_path / "traceback.png", full_page=True)
    finally:
        page.context.close()
    assert (tmp_path / "traceback.png").stat().st_size > 0


def test_an_endpoint_goes_offline_and_a_task_from_waiting_to_success_without_a_reload(
        dash: Dashboard, browser: Any, tmp_path: Path) -> None:
    ep = dash.stack.endpoints["ep"]
    page = sign_in(browser, dash.url, dash.token_a, tmp_path, "alice")
    try:
        page.goto(f"{dash.url}/ui/endpoints/{ep.endpoint_id}")
        page.wait_for_selector("#live.on")  # the event stream is open
        assert page.locator("#endpoint-state").inner_text() == "online"
        page.evaluate("window.__same_page = true")  # gone if the page were reloaded
        dash.stack.stop_endpoint("ep")  # offline: a task waits for it
        page.wait_for_function(
            "document.getElementById('endpoint-state').textContent.trim() === 'offline'")
        assert page.evaluate("window.__same_page") is True
        page.screenshot(path=tmp_path / "offline.png")
        with dash.client(dash.token_a) as c:
            task_id = c.run(double, 21, endpoint_id=ep.endpoint_id)
            assert _state(c, task_id) == "waiting_for_endpoint"
        page.goto(f"{dash.url}/ui/tasks/{task_id}")
        page.wait_for_selector("#live.on")
        state = page.locator("#task-state")
        assert state.inner_text() == "waiting_for_endpoint"
        page.evaluate("window.__same_page = true")
        page.screenshot(path=tmp_path / "waiting.png")
        outlives_test(dash.stack.start_endpoint("ep").proc.pid)  # the module's stack ends it
        page.wait_for_function(
            "document.getElementById('task-state').textContent.trim() === 'success'")
        assert page.evaluate("window.__same_page") is True
        assert page.locator("#timeline tr").count() >= 5  # header, received..completed
        page.screenshot(path=tmp_path / "success.png", full_page=True)
    finally:
        page.context.close()


def test_a_second_user_sees_none_of_the_first_users_tasks(
        dash: Dashboard, browser: Any, tmp_path: Path) -> None:
    ep = dash.stack.endpoints["ep"]
    with dash.client(dash.token_a) as c:
        mine = c.run(double, 4, endpoint_id=ep.endpoint_id)
        wait_until(lambda: _state(c, mine) == "success", 60, "the task to succeed")
    alice = sign_in(browser, dash.url, dash.token_a, tmp_path, "alice")
    bob = sign_in(browser, dash.url, dash.token_b, tmp_path, "bob")
    try:
        alice.goto(f"{dash.url}/ui/tasks")
        assert alice.locator(f'#tasks tr[data-task-id="{mine}"]').count() == 1
        assert bob.locator("#who").inner_text() == "bob"
        assert bob.locator(f'tr[data-endpoint-id="{ep.endpoint_id}"]').count() == 0
        bob.goto(f"{dash.url}/ui/tasks")
        assert bob.locator("#tasks tr[data-task-id]").count() == 0
        bob.screenshot(path=tmp_path / "bob-tasks.png")
        bob.goto(f"{dash.url}/ui/tasks/{mine}")
        assert "not found" in bob.locator("h1").inner_text().lower()
        bob.goto(f"{dash.url}/ui/endpoints/{ep.endpoint_id}")
        assert "not found" in bob.locator("h1").inner_text().lower()
        bob.goto(f"{dash.url}/ui/functions")
        assert bob.locator("#functions tr[data-function-id]").count() == 0
        bob.goto(f"{dash.url}/ui/activity")
        assert bob.locator("#ended").inner_text().startswith("0 ended")
        bob.screenshot(path=tmp_path / "bob-activity.png")
    finally:
        alice.context.close()
        bob.context.close()
