"""Globus Auth's browser login, in Chromium, against a local stand-in for Globus
Auth (auth_standin.py) that the service's real globus-sdk client talks to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_standin import AuthStandin
from stacks import running

CLIENT = "56cc31b2-e84a-11f1-936a-02fc00000001"
SECRET = "standin-secret"
SCOPE = "https://auth.globus.org/scopes/56cc31b2-e84a-11f1-936a-02fc00000001/all"


@pytest.fixture(scope="module")
def globus_service(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[str, AuthStandin]]:
    home = Path(tmp_path_factory.mktemp("globus")) / "home"
    with AuthStandin(CLIENT, SECRET, "scientist@uni.edu") as standin, running(home, env={
            "GLOBUS_SDK_SERVICE_URL_AUTH": standin.url, "FUNCX_FLOWS_GLOBUS_CLIENT_ID": CLIENT,
            "FUNCX_FLOWS_GLOBUS_CLIENT_SECRET": SECRET,
            "FUNCX_FLOWS_GLOBUS_REQUIRED_SCOPE": SCOPE}) as stack:
        yield stack.service_url, standin


def test_sign_in_through_globus_auth(globus_service: tuple[str, AuthStandin], browser: Any,
                                     tmp_path: Path) -> None:
    url, _ = globus_service
    page = browser.new_page()
    try:
        page.goto(url + "/ui/tasks")
        page.screenshot(path=tmp_path / "login.png")
        page.click("#globus")  # to Globus, and back with a code
        page.wait_for_url("**/ui/tasks")
        assert page.locator("#who").inner_text() == "globus:scientist@uni.edu"
        page.screenshot(path=tmp_path / "signed-in.png")
    finally:
        page.close()


def test_a_callback_not_started_here_is_refused(globus_service: tuple[str, AuthStandin]
                                                ) -> None:
    url, standin = globus_service
    start = httpx.get(url + "/ui/login/globus")
    assert start.status_code == 303 and start.headers["location"].startswith(standin.url)
    back = httpx.get(start.headers["location"])  # Globus sends the browser back ...
    callback = back.headers["location"]
    forged = httpx.get(callback)  # ... but without the sign-in's cookie: not this browser's
    assert forged.status_code == 401 and "was not started here" in forged.text
    assert "set-cookie" not in forged.headers
