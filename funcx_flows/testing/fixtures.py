"""pytest fixtures over ``running_stack`` (load with ``pytest_plugins =
["funcx_flows.testing.fixtures"]`` in a conftest.py): one stack per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from funcx_flows.testing import FuncxTestStack, running_stack


@pytest.fixture(scope="session")
def funcx_stack() -> Iterator[FuncxTestStack]:
    """A service and an endpoint named ``test``, real processes in a temporary home,
    with the environment pointing at them (see ``funcx_flows.testing``)."""
    with running_stack("test") as stack:
        yield stack


@pytest.fixture
def funcx_endpoint(funcx_stack: FuncxTestStack) -> str:
    """The name to give ``remote_task(endpoint=...)`` or ``Executor(endpoint=...)``."""
    return funcx_stack.endpoint
