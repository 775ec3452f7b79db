"""The result outbox as a pure policy: the hold under load, sending and spooling,
acknowledgements, resends, and a spool that fails. The spool is the real SQLite
one (spool.Spool) behind a switch that makes its writes fail as a full disk does;
the sending and the clock are the test's. The last test drives random sequences
of events and checks that no result is ever forgotten before its acknowledgement."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from funcx_flows import messages as m
from funcx_flows.endpoint.outbox import (
    RESEND_BATCH,
    RESEND_UNACKED_S,
    RESULTS_HOLD_MAX,
    RESULTS_HOLD_S,
    Outbox,
)
from funcx_flows.endpoint.spool import Spool
from funcx_flows.errors import ResultTooLarge


class FailingSpool:
    """The real spool, whose writes fail while ``broken`` (as on a full disk: the
    real one raises having kept nothing). Records what it was asked to forget."""

    def __init__(self, path: Path) -> None:
        self.real = Spool(path)
        self.path = path
        self.broken = False
        self.removed: list[str] = []

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.real

    def __len__(self) -> int:
        return len(self.real)

    @property
    def task_ids(self) -> set[str]:
        return self.real.task_ids

    def add(self, results: list[m.TaskResult]) -> None:
        if self.broken:
            raise sqlite3.OperationalError("database or disk is full")
        self.real.add(results)

    def remove(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if self.broken:
            raise sqlite3.OperationalError("database or disk is full")
        self.removed.extend(ids)
        self.real.remove(ids)

    def get(self, task_ids: Iterable[str]) -> list[m.TaskResult]:
        return self.real.get(task_ids)

    def batches(self, size: int = 500) -> Iterator[list[m.TaskResult]]:
        return self.real.batches(size)

    def close(self) -> None:
        self.real.close()


class Harness:
    """An outbox with a clock the test moves and a list of what it sent."""

    def __init__(self, folder: Path) -> None:
        self.now = 1000.0
        self.sent: list[list[m.TaskResult]] = []
        self.notes: list[str] = []
        self.spool = FailingSpool(folder / "spool.db")
        self.box = Outbox(self.spool, self.sent.append, lambda: self.now, self.notes.append)

    def sent_ids(self) -> list[str]:
        return [r.task_id for batch in self.sent for r in batch]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.spool.close()


def results(*ids: str, size: int = 0) -> list[m.TaskResult]:
    return [m.TaskResult(task_id=t, ok=True, data=b"x" * size) for t in ids]


IDS = [f"t{i}" for i in range(10)]


def test_results_wait_only_while_tasks_queue(h: Harness):
    """Results wait for more only while more tasks are held than there are
    workers, and not past RESULTS_HOLD_S."""
    box = h.box
    box.add(results(IDS[0]), 100)
    assert box.flush(held=2, workers=2, link_up=True) != []  # one at a time: at once
    box.add(results(IDS[1]), 100)
    assert box.flush(held=10, workers=2, link_up=True) == []  # a burst: wait
    assert box.wait_ms(200) == 2  # the loop wakes when the hold ends
    h.now += RESULTS_HOLD_S / 2
    assert box.flush(held=10, workers=2, link_up=True) == []
    h.now += RESULTS_HOLD_S
    assert box.wait_ms(200) == 0
    assert [r.task_id for r in box.flush(held=10, workers=2, link_up=True)] == IDS[1:2]
    box.add(results(*IDS[2:9]), 100)
    # 8 held, 7 of them answered: one left for two workers, no queue: go
    assert len(box.flush(held=8, workers=2, link_up=True)) == 7
    assert box.wait_ms(200) == 200  # nothing waits


def test_a_burst_leaves_when_the_hold_is_full(h: Harness):
    ids = [f"t{i}" for i in range(RESULTS_HOLD_MAX)]
    h.box.add(results(*ids[:-1]), 100)
    assert h.box.flush(held=10_000, workers=2, link_up=True) == []
    h.box.add(results(ids[-1]), 100)
    assert len(h.box.flush(held=10_000, workers=2, link_up=True)) == RESULTS_HOLD_MAX
    assert len(h.sent) == 1


def test_sent_first_then_spooled_and_forgotten_on_acknowledgement(h: Harness):
    h.box.add(results("a", "b"), 100)
    h.box.flush(held=2, workers=2, link_up=True)
    assert h.sent_ids() == ["a", "b"] and h.spool.task_ids == {"a", "b"}
    h.box.acked(["a"])
    assert h.spool.task_ids == {"b"} and set(h.box.sent_at) == {"b"}


def test_with_the_link_down_results_are_spooled_not_sent(h: Harness):
    h.box.add(results("a"), 100)
    h.box.flush(held=1, workers=1, link_up=False, force=True)
    assert h.sent == [] and h.spool.task_ids == {"a"} and not h.box.sent_at


def test_a_result_over_the_limit_becomes_result_too_large(h: Harness):
    h.box.add(results("big", size=101) + results("small", size=100), 100)
    out = {r.task_id: r for r in h.box.flush(held=2, workers=2, link_up=True)}
    assert out["small"].ok
    err = out["big"].error
    assert not out["big"].ok and err is not None and err.code == ResultTooLarge.code
    assert "101 bytes" in err.message


def test_reconnect_resends_every_unacknowledged_result_in_batches(h: Harness):
    ids = [f"t{i}" for i in range(RESEND_BATCH + 3)]
    h.box.add(results(*ids), 100)
    h.box.flush(held=len(ids), workers=1, link_up=False, force=True)
    h.box.resend_all()
    assert sorted(h.sent_ids()) == sorted(ids)
    assert [len(b) for b in h.sent] == [RESEND_BATCH, 3]


def test_unacknowledged_results_go_again_after_a_while(h: Harness):
    h.box.add(results("a", "b"), 100)
    h.box.flush(held=2, workers=2, link_up=True)
    h.box.acked(["a"])
    h.now += RESEND_UNACKED_S
    h.box.tick(link_up=True)
    assert h.sent_ids() == ["a", "b"]  # not yet: not past the limit
    h.now += 0.5
    h.box.tick(link_up=False)
    assert h.sent_ids() == ["a", "b"]  # the link is down: the reconnect resends
    h.box.tick(link_up=True)
    assert h.sent_ids() == ["a", "b", "b"]


def test_a_failing_spool_keeps_results_in_memory_and_says_so_once(h: Harness):
    h.spool.broken = True
    h.box.add(results("a"), 100)
    h.box.flush(held=1, workers=1, link_up=True)
    h.box.add(results("b"), 100)
    h.box.flush(held=1, workers=1, link_up=True)
    assert h.sent_ids() == ["a", "b"]  # sent anyway
    assert set(h.box.unspooled) == {"a", "b"} and len(h.spool) == 0
    assert h.box.unacknowledged == 2
    assert len(h.notes) == 1 and "cannot write the result spool" in h.notes[0]
    assert "cannot write" in h.box.spool_error
    h.box.tick(link_up=False)  # still broken: nothing changes
    assert set(h.box.unspooled) == {"a", "b"}
    h.spool.broken = False
    h.box.tick(link_up=False)
    assert h.spool.task_ids == {"a", "b"} and not h.box.unspooled and not h.box.spool_error


def test_an_acknowledgement_the_spool_cannot_record_is_retried(h: Harness):
    h.box.add(results("a"), 100)
    h.box.flush(held=1, workers=1, link_up=True)
    h.spool.broken = True
    h.box.acked(["a"])
    assert h.box.unremoved == {"a"} and "cannot update" in h.box.spool_error
    h.spool.broken = False
    h.box.tick(link_up=True)
    assert len(h.spool) == 0 and not h.box.unremoved and not h.box.spool_error


class OutboxMachine(RuleBasedStateMachine):
    """Results come, leave (held or forced), the link drops and returns, the spool
    breaks and heals, the service acknowledges some of what it got, time passes.
    Invariants: a result not yet acknowledged is always in exactly one of the
    outbox's places (waiting, the spool, memory), the spool forgets only what was
    acknowledged, and every result flushed with the link up was sent. At the end,
    with the link up and the spool healed, every result reaches the service and,
    once acknowledged, leaves the spool."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.h = Harness(Path(self.dir.name))
        self.next_id = 0
        self.added: set[str] = set()
        self.acked: set[str] = set()
        self.held: set[str] = set()  # the agent's: tasks whose result has not left
        self.link_up = True

    def teardown(self) -> None:
        self.h.spool.close()
        self.dir.cleanup()

    @rule(n=st.integers(1, 5), big=st.booleans())
    def results_come(self, n: int, big: bool) -> None:
        ids = [f"t{self.next_id + i}" for i in range(n)]
        self.next_id += n
        self.added.update(ids)
        self.held.update(ids)
        self.h.box.add(results(*ids, size=200 if big else 0), 100)

    @rule(more_held=st.integers(0, 20), workers=st.integers(0, 4), force=st.booleans())
    def flush(self, more_held: int, workers: int, force: bool) -> None:
        before = len(self.h.sent)
        out = self.h.box.flush(held=len(self.held) + more_held, workers=workers,
                               link_up=self.link_up, force=force)
        self.held.difference_update(r.task_id for r in out)
        if out and self.link_up:
            assert [r.task_id for r in self.h.sent[before]] == [r.task_id for r in out]

    @rule(data=st.data())
    def service_acknowledges(self, data: st.DataObject) -> None:
        got = sorted(set(self.h.sent_ids()))
        ids = data.draw(st.lists(st.sampled_from(got), max_size=4)) if got else []
        self.acked.update(ids)
        self.h.box.acked([*ids, "never-sent"])

    @rule()
    def link_drops(self) -> None:
        self.link_up = False

    @precondition(lambda self: not self.link_up)
    @rule()
    def link_returns(self) -> None:
        self.link_up = True
        self.h.box.resend_all()

    @rule(broken=st.booleans())
    def spool_breaks_or_heals(self, broken: bool) -> None:
        self.h.spool.broken = broken

    @rule(after=st.sampled_from([0.0, 0.001, RESULTS_HOLD_S, 1.0, RESEND_UNACKED_S + 1]))
    def time_passes(self, after: float) -> None:
        self.h.now += after
        self.h.box.tick(self.link_up)

    @invariant()
    def nothing_unacknowledged_is_lost(self) -> None:
        box = self.h.box
        places = [r.task_id for r in box._results] + list(box.unspooled)
        places += sorted(self.h.spool.task_ids - set(box.unspooled))
        unacked = self.added - self.acked
        assert unacked <= set(places), "a result not acknowledged is nowhere"
        assert len([p for p in places if p in unacked]) == len(unacked), "in two places"

    @invariant()
    def the_spool_forgets_only_acknowledged_results(self) -> None:
        assert set(self.h.spool.removed) <= self.acked | {"never-sent"}

    def check_the_end(self) -> None:
        """Link up, spool healed, everything flushed, then resent as time passes:
        each result reached the service; acknowledged, the spool empties."""
        h = self.h
        h.spool.broken = False
        if not self.link_up:
            self.link_returns()
        out = h.box.flush(held=len(self.held), workers=1, link_up=True, force=True)
        self.held.difference_update(r.task_id for r in out)
        assert not self.held
        h.now += RESEND_UNACKED_S + 1
        h.box.tick(link_up=True)
        assert set(h.sent_ids()) == self.added
        h.box.acked(sorted(self.added))
        self.acked |= self.added
        h.box.tick(link_up=True)
        assert len(h.spool) == 0 and not h.box.unspooled and not h.box.sent_at
        assert not h.box.spool_error

    @rule()
    def the_end(self) -> None:
        self.check_the_end()


OutboxMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_no_result_is_forgotten_before_its_acknowledgement = OutboxMachine.TestCase
