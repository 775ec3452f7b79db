"""Fixtures of the dashboard tests: the stack (dashstack.py) and Debian's Chromium
driven by Playwright (the system browser: no download)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dashstack import CHROMIUM, Dashboard, cli

from funcx_flows.localstack import LocalStack


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    stack = LocalStack(Path(tmp_path_factory.mktemp("dash")) / "home")
    try:
        url = stack.start_service()
        stack.start_endpoint("ep", {"max_workers_per_node": 2, "heartbeat_period_s": 0.5,
                                    "heartbeat_threshold_s": 5, "provider": "inline"})
        token_a = (stack.home / "token").read_text().strip()
        token_b = cli(stack, "token", "create", "--user", "bob")
        yield Dashboard(stack, url, token_a, token_b)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser(need: Callable[[bool, str], None]) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is not installed (pip install -e '.[test]')")
        raise
    need(Path(CHROMIUM).exists(), "Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
