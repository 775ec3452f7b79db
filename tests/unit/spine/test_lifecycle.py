from __future__ import annotations

import itertools

import pytest

from funcx_flows.service import lifecycle as lc


@pytest.mark.parametrize("terminal", sorted(lc.TERMINAL))
def test_terminal_states_never_change(terminal):
    assert not any(lc.can_transition(terminal, s) for s in lc.STATES)


def test_every_active_state_can_end():
    for active, end in itertools.product(lc.ACTIVE, lc.TERMINAL):
        assert lc.can_transition(active, end)


def test_the_happy_path_and_its_fallbacks():
    path = [lc.RECEIVED, lc.WAITING, lc.DISPATCHED, lc.RUNNING, lc.SUCCESS]
    assert all(lc.can_transition(a, b) for a, b in itertools.pairwise(path))
    assert lc.can_transition(lc.RUNNING, lc.WAITING)  # endpoint went away with it
    assert lc.can_transition(lc.RUNNING, lc.DISPATCHED)  # retried after a system failure
    assert not lc.can_transition(lc.DISPATCHED, lc.RECEIVED)
    assert not lc.can_transition(lc.RUNNING, lc.RECEIVED)


def test_unknown_states_are_refused():
    with pytest.raises(ValueError, match="unknown task state"):
        lc.can_transition("done", lc.SUCCESS)
    with pytest.raises(ValueError, match="unknown task state"):
        lc.can_transition(lc.RUNNING, "finished")
