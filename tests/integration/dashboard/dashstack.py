"""The dashboard tests' stack: a real service with a real local endpoint and two
users, and signing a browser in (a module of its own name: see facility.py)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import Client

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Dashboard:
    stack: LocalStack
    url: str
    token_a: str  # the bootstrap user's
    token_b: str  # a second user's

    def client(self, token: str) -> Client:
        return Client(self.url, token, home=self.stack.home)


def sign_in(browser: Any, url: str, token: str, shots: Path, who: str) -> Any:
    """A new browser context (its own cookies) signed in with ``token``."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(url + "/ui/endpoints")
    assert "/ui/login" in page.url  # not signed in: sent to sign in
    page.fill("#token", token)
    page.screenshot(path=shots / f"{who}-login.png")
    page.click("#sign-in")
    page.wait_for_url("**/ui/endpoints")
    return page
