"""A task's life on the service, as a pure state machine: a state and an event in,
the next state or a refusal out. No I/O, no clock.

             QUEUE                     DISPATCH               START
    received ------> waiting_for_endpoint ----------> dispatched ------> running
       |                                              ^    ^  |             |
       +---------------------DISPATCH-----------------+    +--+ DISPATCH    |
                                                       +------DISPATCH------+
    any of those four --SUCCEED--> success
                      --FAIL-----> failed
                      --CANCEL---> cancelled
    success | failed | cancelled --PURGE--> (gone)

A task is stored already queued (its endpoint offline) or dispatched (online).
DISPATCH also re-sends: to an endpoint that says Hello again, every task of its
not held by it goes out again, running ones first. START comes only from a task
that was queued or sent: a "running" report for a task that already ended (its
result overtook the report) is refused. Terminal states never change: a late or
duplicate result, a cancel of a finished task, is refused and changes nothing.

The store asks this module, never its own ``if``s: its SQL ``WHERE state IN
(...)`` guards are ``sources(event)``, and where it reads rows before writing
them it takes each new state from ``expect``, which raises ``IllegalTransition``
(a bug, not bad input) when the rows it read break the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

RECEIVED = "received"
WAITING = "waiting_for_endpoint"
DISPATCHED = "dispatched"
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
CANCELLED = "cancelled"
PURGED = "purged"  # not a stored state: the task has left the database

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


# Events are strings (a NewType, so that mypy tells them from states): the store
# looks a transition up per row, and an Enum member hashes in Python.
Event = NewType("Event", str)
QUEUE = Event("queue")  # stored while its endpoint is offline
DISPATCH = Event("dispatch")  # sent to its endpoint (when stored, or again on its Hello)
START = Event("start")  # the endpoint says a worker runs it
SUCCEED = Event("succeed")  # a result: the function returned
FAIL = Event("fail")  # a result that failed, or the service gave up on it
CANCEL = Event("cancel")  # its owner, or its client's departure, cancelled it
PURGE = Event("purge")  # finished longer ago than results are kept
EVENTS = (QUEUE, DISPATCH, START, SUCCEED, FAIL, CANCEL, PURGE)

# event -> {state it applies to: the state it leads to}; everything else is refused
_RULES: dict[Event, dict[str, str]] = {
    QUEUE: {RECEIVED: WAITING},
    DISPATCH: {s: DISPATCHED for s in (RECEIVED, WAITING, DISPATCHED, RUNNING)},
    START: {WAITING: RUNNING, DISPATCHED: RUNNING},
    SUCCEED: {s: SUCCESS for s in ACTIVE},
    FAIL: {s: FAILED for s in ACTIVE},
    CANCEL: {s: CANCELLED for s in ACTIVE},
    PURGE: {s: PURGED for s in TERMINAL},
}


@dataclass(frozen=True, slots=True)
class Transition:
    event: Event
    start: str
    end: str

    @property
    def stamp(self) -> str | None:
        """The timestamp column the new state sets (None: purged)."""
        return TIMESTAMP_OF.get(self.end)


@dataclass(frozen=True, slots=True)
class Refusal:
    event: Event
    state: str
    reason: str


class IllegalTransition(AssertionError):
    """The store was about to make a transition the lifecycle refuses: a bug."""


def _refusal(state: str, event: Event) -> Refusal:
    if state in TERMINAL:
        why = f"a {state} task never changes"
    elif event is START:
        why = "only a queued or dispatched task starts"
    elif event is PURGE:
        why = "only a finished task is purged"
    else:
        why = f"{event} does not apply to a {state} task"
    return Refusal(event, state, why)


_STEPS: dict[tuple[str, Event], Transition | Refusal] = {
    (state, event): (Transition(event, state, rules[state]) if state in rules
                     else _refusal(state, event))
    for event, rules in _RULES.items() for state in STATES
}


def step(state: str, event: Event) -> Transition | Refusal:
    """What ``event`` does to a task in ``state``."""
    out = _STEPS.get((state, event))
    if out is None:
        raise ValueError(f"unknown task state {state!r} or event {event!r}")
    return out


def expect(state: str, event: Event) -> Transition:
    """The transition ``event`` makes from ``state``; IllegalTransition if refused."""
    out = _STEPS.get((state, event))
    if type(out) is Transition:
        return out
    if out is None:
        raise ValueError(f"unknown task state {state!r} or event {event!r}")
    assert isinstance(out, Refusal)
    raise IllegalTransition(f"{event} of a {state} task: {out.reason}")


def sources(*events: Event) -> frozenset[str]:
    """The states from which every one of ``events`` applies: the store's guards."""
    out = frozenset(STATES)
    for event in events:
        out &= _RULES[event].keys()
    return out


def end_state(event: Event) -> str:
    """The state ``event`` leads to, wherever it applies (each event has one)."""
    (end,) = set(_RULES[event].values())
    return end


def stored_state(online: bool) -> str:
    """The state a new task is stored in: sent at once when its endpoint is online."""
    return expect(RECEIVED, DISPATCH if online else QUEUE).end


def can_transition(current: str, new: str) -> bool:
    """Whether some event moves a task in ``current`` to ``new``."""
    for state in (current, new):
        if state not in STATES:
            raise ValueError(f"unknown task state {state!r}")
    return any(rules.get(current) == new for rules in _RULES.values())


def is_terminal(state: str) -> bool:
    return state in TERMINAL
