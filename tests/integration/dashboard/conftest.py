"""Fixtures of the dashboard tests: the stack (dashstack.py) and Debian's Chromium
driven by Playwright (the system browser: no download)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dashstack import CHROMIUM, Dashboard
from guards import threads_outlive_tests
from stacks import create_token, running


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    with running(Path(tmp_path_factory.mktemp("dash")) / "home",
                 endpoints={"ep": {"provider": "inline"}}) as stack:
        token_a = (stack.home / "token").read_text().strip()
        yield Dashboard(stack, stack.service_url, token_a, create_token(stack, "bob"))


@pytest.fixture(scope="module")
def browser(need: Callable[[bool, str], None], request: pytest.FixtureRequest) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is not installed (pip install -e '.[test]')")
        raise
    need(Path(CHROMIUM).exists(), "Chromium is not installed (apt-get install chromium)")
    # Playwright's event loop starts its executor's threads as the tests drive it;
    # they end with the loop, at the end of the module
    threads_outlive_tests(request.node.nodeid, "asyncio_")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
