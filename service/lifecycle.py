"""The task state machine, pure: which state may follow which.

    received -> waiting_for_endpoint -> dispatched -> running -> success | failed
    any non-terminal state -> cancelled | failed

``dispatched`` and ``running`` may fall back to ``waiting_for_endpoint`` when an
endpoint goes away with the task (it is re-sent on the endpoint's next Hello);
``running`` may go back to ``dispatched`` when a task is retried after a system
failure. Terminal states never change: a late or duplicate result for a
terminal task is acknowledged and dropped.
"""

from __future__ import annotations

RECEIVED = "received"
WAITING = "waiting_for_endpoint"
DISPATCHED = "dispatched"
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
CANCELLED = "cancelled"

STATES = (RECEIVED, WAITING, DISPATCHED, RUNNING, SUCCESS, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCESS, FAILED, CANCELLED})
ACTIVE = frozenset({RECEIVED, WAITING, DISPATCHED, RUNNING})

# the timestamp column each state stamps when entered
TIMESTAMP_OF = {
    RECEIVED: "t_received",
    WAITING: "t_waiting",
    DISPATCHED: "t_dispatched",
    RUNNING: "t_running",
    SUCCESS: "t_completed",
    FAILED: "t_completed",
    CANCELLED: "t_completed",
}

_NEXT: dict[str, frozenset[str]] = {
    RECEIVED: frozenset({WAITING, DISPATCHED}),
    WAITING: frozenset({DISPATCHED, RUNNING}),
    DISPATCHED: frozenset({RUNNING, WAITING}),
    RUNNING: frozenset({DISPATCHED, WAITING}),
    SUCCESS: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def can_transition(current: str, new: str) -> bool:
    """Whether a task in ``current`` may move to ``new``.

    Any non-terminal task may end (success, failed, cancelled): an endpoint may
    report a result before the service saw it running."""
    if current not in _NEXT:
        raise ValueError(f"unknown task state {current!r}")
    if new not in _NEXT:
        raise ValueError(f"unknown task state {new!r}")
    if current in TERMINAL:
        return False
    if new in TERMINAL:
        return True
    return new in _NEXT[current]


def is_terminal(state: str) -> bool:
    return state in TERMINAL
