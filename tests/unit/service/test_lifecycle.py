"""The task lifecycle alone: a state and an event in, a state or a refusal out."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcx_flows.service import lifecycle as lc


def end(state: str, event: lc.Event) -> str | None:
    out = lc.step(state, event)
    return out.end if isinstance(out, lc.Transition) else None


def test_the_happy_path_stamps_each_state():
    path = [(lc.QUEUE, lc.WAITING), (lc.DISPATCH, lc.DISPATCHED), (lc.START, lc.RUNNING),
            (lc.SUCCEED, lc.SUCCESS), (lc.PURGE, lc.PURGED)]
    state = lc.RECEIVED
    for event, expected in path:
        t = lc.expect(state, event)
        assert (t.start, t.end) == (state, expected)
        assert t.stamp == lc.TIMESTAMP_OF.get(expected)
        state = t.end
    assert lc.expect(lc.RUNNING, lc.FAIL).stamp == "t_completed"


@pytest.mark.parametrize(("state", "event"), itertools.product(
    sorted(lc.TERMINAL), [e for e in lc.EVENTS if e != lc.PURGE]))
def test_terminal_states_never_change(state, event):
    refusal = lc.step(state, event)
    assert isinstance(refusal, lc.Refusal) and "never changes" in refusal.reason
    with pytest.raises(lc.IllegalTransition, match=f"{event} of a {state} task"):
        lc.expect(state, event)


@pytest.mark.parametrize("state", sorted(lc.ACTIVE))
def test_every_unfinished_task_can_end_and_none_is_purged(state):
    assert [end(state, e) for e in (lc.SUCCEED, lc.FAIL, lc.CANCEL)] == [
        lc.SUCCESS, lc.FAILED, lc.CANCELLED]
    assert end(state, lc.PURGE) is None


def test_resending_and_starting():
    """An endpoint that says Hello again is sent what it lacks, whatever it was; a
    "running" report counts only for a task that was queued or sent."""
    for state in lc.ACTIVE:
        assert end(state, lc.DISPATCH) == lc.DISPATCHED
    assert end(lc.WAITING, lc.START) == end(lc.DISPATCHED, lc.START) == lc.RUNNING
    assert end(lc.RUNNING, lc.START) is None  # already: nothing to write
    assert end(lc.RECEIVED, lc.START) is None
    assert end(lc.DISPATCHED, lc.QUEUE) is None  # a sent task does not go back


def test_the_store_guards_are_the_lifecycle():
    assert lc.sources(lc.SUCCEED, lc.FAIL, lc.CANCEL) == lc.ACTIVE
    assert lc.sources(lc.START) == {lc.WAITING, lc.DISPATCHED}
    assert lc.sources(lc.PURGE) == lc.TERMINAL
    assert lc.sources(lc.START, lc.PURGE) == frozenset()
    assert (lc.stored_state(online=True), lc.stored_state(online=False)) == (
        lc.DISPATCHED, lc.WAITING)
    assert lc.end_state(lc.CANCEL) == lc.CANCELLED


def test_can_transition_agrees_with_the_events():
    for a, b in itertools.product(lc.STATES, lc.STATES):
        assert lc.can_transition(a, b) == any(end(a, e) == b for e in lc.EVENTS), (a, b)


def test_unknown_states_and_events_are_refused():
    with pytest.raises(ValueError, match="unknown task state"):
        lc.step("done", lc.SUCCEED)
    with pytest.raises(ValueError, match="unknown task state"):
        lc.expect(lc.RUNNING, lc.Event("finish"))
    with pytest.raises(ValueError, match="unknown task state"):
        lc.can_transition(lc.RUNNING, "finished")


@given(st.lists(st.sampled_from([e for e in lc.EVENTS if e != lc.PURGE]), max_size=30))
def test_any_sequence_of_events_ends_at_most_once(events):
    """Fed any events, a task ends at most once and its end never changes: what
    the store relies on for "every task answered once"."""
    state, ends = lc.RECEIVED, 0
    for event in events:
        out = lc.step(state, event)
        if isinstance(out, lc.Refusal):
            assert out.state == state
            continue
        if out.end in lc.TERMINAL:
            ends += 1
        state = out.end
    assert ends <= 1
    assert ends == (state in lc.TERMINAL)
