"""What the process-leak guard (tests/conftest.py) lets a test leave running."""

from __future__ import annotations

# Processes that a longer-lived fixture started again during a test (a module's
# proxy restarted by a fault test): the fixture ends them, not the test.
OUTLIVE_TEST: set[int] = set()


def outlives_test(pid: int) -> None:
    OUTLIVE_TEST.add(pid)
