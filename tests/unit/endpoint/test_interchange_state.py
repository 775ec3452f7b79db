"""InterchangeState, fed events by hand: placement by credit and resources,
retries, lost and silent managers, hand-backs, cancels that race results,
heartbeats and the status, each decided without a socket, a manager process or
a clock (cancel races and retries took real sockets and sleeps before). The
last test drives random event sequences and checks the invariants after each
step."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from funcx_flows import messages as m
from funcx_flows.endpoint.interchange_state import (
    NOTHING,
    SYSTEM_FAILURES,
    Beat,
    CancelRequested,
    Closing,
    FromManagers,
    Instruction,
    InterchangeState,
    Log,
    Note,
    Report,
    TasksSubmitted,
    Tick,
    ToManager,
)

T0 = 1_000_000.0
WALL = 1_700_000_000.0
PERIOD, THRESHOLD = 2.0, 10.0


def spec(i: int, cores: int = 0, gpus: int = 0) -> m.TaskSpec:
    res = m.ResourceSpec(cores=cores, gpus=gpus) if cores or gpus else None
    return m.TaskSpec(task_id=f"t{i}", function_id="f", function=b"", payload=b"",
                      resources=res)


def lost(task_id: str, code: str = "worker_lost") -> m.TaskResult:
    return m.TaskResult(task_id=task_id, ok=False,
                        error=m.ErrorInfo(code=code, message="the worker died"))


def ok(task_id: str) -> m.TaskResult:
    return m.TaskResult(task_id=task_id, ok=True, data=b"r")


@dataclass
class Shell:
    """Plays the interchange's shell: keeps what each manager was sent, and what
    the agent was told."""

    state: InterchangeState
    now: float = T0
    sent: dict[str, list[m.Message]] = field(default_factory=dict)
    beats: list[list[str]] = field(default_factory=list)
    results: list[m.TaskResult] = field(default_factory=list)
    states: list[m.TaskState] = field(default_factory=list)
    statuses: list[m.EndpointStatus] = field(default_factory=list)
    logs: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self, event: object) -> list[Instruction]:
        out = list(self.state.handle(event))  # type: ignore[arg-type]
        for ins in out:
            if isinstance(ins, ToManager):
                self.sent.setdefault(ins.manager_id, []).append(ins.msg)
            elif isinstance(ins, Beat):
                self.beats.append(ins.manager_ids)
            elif isinstance(ins, Report):
                self.results += ins.results
                self.states += ins.states
                if ins.status is not None:
                    self.statuses.append(ins.status)
            elif isinstance(ins, Log):
                self.logs.append((ins.level, ins.text))
            else:
                assert isinstance(ins, Note)
                self.notes.append(ins.text)
        return out

    # what the shell turns into events
    def said(self, manager_id: str, msg: m.Message) -> list[Instruction]:
        return self.run(FromManagers([(manager_id, msg)], self.now))

    def register(self, manager_id: str, credit: int, cores: int = 4, gpus: int = 0,
                 block: str = "b") -> None:
        self.said(manager_id, m.ManagerRegister(
            manager_id=manager_id, hostname=f"host-{manager_id}", block_id=block, workers=2,
            cores=cores, gpus=gpus, python_version="3.11"))
        if credit:
            self.said(manager_id, m.Ready(free=credit))

    def submit(self, specs: list[m.TaskSpec]) -> None:
        self.run(TasksSubmitted(specs))

    def cancel(self, ids: list[str]) -> None:
        self.run(CancelRequested(ids, self.now))

    def tick(self, after: float = 0.001) -> None:
        self.now += after
        self.run(Tick(self.now, WALL + self.now - T0))

    # what the managers were sent
    def tasks_of(self, manager_id: str) -> list[str]:
        return [t.task_id for msg in self.sent.get(manager_id, [])
                if isinstance(msg, m.Tasks) for t in msg.tasks]

    def answer(self, task_id: str) -> m.TaskResult:
        (r,) = [r for r in self.results if r.task_id == task_id]
        return r


def make(max_retries: int = 0) -> Shell:
    return Shell(InterchangeState(max_retries=max_retries, heartbeat_period_s=PERIOD,
                                  heartbeat_threshold_s=THRESHOLD))


def ids(*ns: int) -> list[str]:
    return [f"t{n}" for n in ns]


def test_tasks_go_out_within_each_managers_credit_earliest_registered_first():
    sh = make()
    sh.register("m1", credit=3)
    sh.register("m2", credit=2)
    sh.submit([spec(i) for i in range(7)])
    assert sh.tasks_of("m1") == [] and sh.state.known == set(ids(*range(7)))  # on Tick
    sh.tick()
    assert sh.tasks_of("m1") == ids(0, 1, 2) and sh.tasks_of("m2") == ids(3, 4)
    assert [t.task_id for t in sh.state.pending] == ids(5, 6)
    sh.said("m2", m.Results(results=[ok("t3")], free=1))  # credit rides on results
    sh.tick()
    assert sh.tasks_of("m2") == ids(3, 4, 5) and sh.answer("t3").ok
    sh.submit([spec(3), spec(4)])  # t4 is known: ignored; t3 was answered: a new task
    assert [t.task_id for t in sh.state.pending] == ids(6, 3)


def test_a_task_goes_only_where_its_resources_are_and_waits_in_order_otherwise():
    sh = make()
    sh.register("small", credit=4, cores=2)
    sh.register("gpu", credit=4, cores=8, gpus=1)
    sh.submit([spec(0, cores=4), spec(1), spec(2, gpus=1), spec(3, cores=64), spec(4)])
    sh.tick()
    assert sh.tasks_of("small") == ids(1, 4)
    assert sh.tasks_of("gpu") == ids(0, 2)
    assert [t.task_id for t in sh.state.pending] == ids(3)  # no node has 64 cores
    sh.register("big", credit=1, cores=64)
    sh.tick()
    assert sh.tasks_of("big") == ids(3) and not sh.state.pending


def test_a_draining_manager_gets_no_more_work():
    sh = make()
    sh.register("m1", credit=4)
    sh.said("m1", m.Drain(reason="walltime ends soon"))
    sh.submit([spec(0)])
    sh.tick()
    assert sh.tasks_of("m1") == [] and len(sh.state.pending) == 1


@pytest.mark.parametrize("code", sorted(SYSTEM_FAILURES))
def test_a_system_failure_is_retried_up_to_max_retries_then_answered(code: str):
    sh = make(max_retries=2)
    sh.register("m1", credit=10)
    sh.submit([spec(0), spec(1)])
    sh.tick()
    for attempt in (1, 2):
        sh.said("m1", m.Results(results=[lost("t0", code)], free=1))
        assert [t.task_id for t in sh.state.pending] == ["t0"]  # at the head of the queue
        assert sh.state.pending[0].attempt == attempt
        sh.tick()
        assert sh.tasks_of("m1").count("t0") == attempt + 1 and not sh.results
    sh.said("m1", m.Results(results=[lost("t0", code), lost("t1", "error")], free=2))
    sh.tick()
    assert sh.answer("t0").error.code == code  # type: ignore[union-attr]
    assert sh.answer("t1").error.code == "error"  # type: ignore[union-attr]  # the user's
    assert not sh.state.known
    assert sum("retrying task t0" in text for _, text in sh.logs) == 2


@pytest.mark.parametrize("how", ["silence", "bye", "re-registration"])
def test_a_lost_managers_tasks_are_retried_then_failed_with_the_cause(how: str):
    sh = make(max_retries=1)
    sh.register("m1", credit=2)
    sh.submit([spec(0), spec(1)])
    sh.tick()
    sh.register("m2", credit=0)

    def lose(manager_id: str) -> None:
        if how == "silence":
            sh.said("m2" if manager_id == "m1" else "m1", m.Heartbeat(sent_at=0))
            sh.tick(after=THRESHOLD / 2)
            sh.said("m2" if manager_id == "m1" else "m1", m.Heartbeat(sent_at=0))
            sh.tick(after=THRESHOLD / 2 + 1)
        elif how == "bye":
            sh.said(manager_id, m.Bye(reason="the pilot ended"))
        else:
            sh.register(manager_id, credit=0)

    lose("m1")
    if how != "re-registration":
        assert "m1" not in sh.state.managers
    assert sorted(t.task_id for t in sh.state.pending) == ids(0, 1)  # retried
    assert [t.attempt for t in sh.state.pending] == [1, 1]
    sh.said("m2", m.Ready(free=2))
    sh.tick()
    assert sorted(sh.tasks_of("m2")) == ids(0, 1)
    lose("m2")
    sh.tick()
    code, why = {"silence": ("manager_lost", "manager lost: no heartbeat for"),
                 "bye": ("pilot_ended", "manager stopped: the pilot ended"),
                 "re-registration": ("manager_lost", "manager re-registered")}[how]
    for t in ids(0, 1):
        error = sh.answer(t).error
        assert error is not None and error.code == code
        assert error.message.startswith(why) and "(manager m2 on host-m2)" in error.message
        assert sh.answer(t).attempts == 2
    assert len(sh.notes) == 2 and sh.notes[-1].endswith("with 2 tasks")
    assert not sh.state.known


def test_tasks_handed_back_go_to_the_head_of_the_queue_for_any_manager():
    """The interchange's half of "tasks that turn long go back for other managers"
    (the manager's half: test_manager_state.py's test of that name)."""
    sh = make()
    sh.register("m1", credit=20)
    sh.submit([spec(i) for i in range(24)])
    sh.tick()
    assert sh.tasks_of("m1") == ids(*range(20))
    sh.said("m1", m.Requeue(task_ids=ids(*range(4, 20))))  # it keeps what it runs
    assert [t.task_id for t in sh.state.pending] == ids(*range(4, 24))
    assert all(t.attempt == 0 for t in sh.state.pending)  # a hand-back is no retry
    sh.register("m2", credit=16)
    sh.tick()
    assert sh.tasks_of("m2") == ids(*range(4, 20))
    assert set(sh.state.managers["m1"].tasks) == set(ids(0, 1, 2, 3))


def test_a_queued_task_cancelled_ends_cancelled_at_the_next_turn():
    sh = make()
    sh.submit([spec(0), spec(1)])
    sh.cancel(["t0", "never-seen"])
    assert not sh.results  # reported with the turn
    sh.tick()
    assert [r.task_id for r in sh.results] == ["t0"]
    assert sh.answer("t0").error == m.ErrorInfo(code="cancelled", message="cancelled by the user")
    assert [t.task_id for t in sh.state.pending] == ["t1"] and sh.state.known == {"t1"}


@pytest.mark.parametrize("then", ["its result", "a hand-back", "its worker is lost",
                                  "the manager is lost", "its result, twice"])
def test_a_cancel_that_races_a_manager_answers_once(then: str):
    sh = make(max_retries=3)
    sh.register("m1", credit=2)
    sh.submit([spec(0)])
    sh.tick()
    sh.cancel(["t0"])
    assert sh.sent["m1"][-1] == m.Cancel(task_ids=["t0"])
    assert sh.state.cancelling == {"t0"}
    if then.startswith("its result"):  # done before the manager saw the Cancel
        for _ in range(2 if then.endswith("twice") else 1):
            sh.said("m1", m.Results(results=[ok("t0")], free=1))
        want = "ok"
    elif then == "a hand-back":
        sh.said("m1", m.Requeue(task_ids=["t0"]))
        want = "cancelled"
    elif then == "its worker is lost":  # not retried, though retries are left
        sh.said("m1", m.Results(results=[lost("t0")], free=1))
        want = "worker_lost"
    else:
        sh.said("m1", m.Bye(reason="gone"))
        want = "cancelled"
    sh.tick()
    sh.tick(after=THRESHOLD + 1)  # (and m1, if still there, is lost now: nothing left)
    assert [r.task_id for r in sh.results] == ["t0"]
    r = sh.results[0]
    assert (r.error.code if r.error else "ok") == want
    assert not sh.state.known and not sh.state.cancelling and not sh.state.pending
    assert sh.tasks_of("m1") == ["t0"]  # never sent again


def test_running_states_only_for_tasks_the_manager_holds():
    sh = make()
    sh.register("m1", credit=1)
    sh.submit([spec(0)])
    sh.tick()
    sh.said("m1", m.TaskStates(states=[m.TaskState(task_id="t0", state="running", at=1.0),
                                       m.TaskState(task_id="t9", state="running", at=1.0)]))
    sh.tick()
    assert [s.task_id for s in sh.states] == ["t0"]


def test_an_unknown_manager_is_told_to_register_and_a_false_id_is_refused():
    sh = make()
    out = sh.said("ghost", m.Ready(free=5))
    assert out == [ToManager("ghost", m.Shutdown(reason="unknown manager"))]
    assert not sh.state.managers
    sh.register("m1", credit=0)
    false_id = m.ManagerRegister(manager_id="m2", hostname="h", workers=1, cores=1,
                                 python_version="3.11")
    # dropped, with a warning; the rest of the batch is handled
    sh.run(FromManagers([("m1", false_id), ("m1", m.Ready(free=2))], sh.now))
    assert sh.logs[-1] == (logging.WARNING, "dropped a bad message: ManagerRegister "
                                            "names another id than its routing id")
    assert list(sh.state.managers) == ["m1"] and sh.state.managers["m1"].free == 2


def test_a_message_the_state_fails_on_is_dropped_not_the_batch():
    """A bug met while handling one message (here, a Results whose results are
    not a list) is logged with its cause; the other messages are handled."""
    sh = make()
    sh.register("m1", credit=0)
    odd = m.Results(results=None, free=0)  # type: ignore[arg-type]
    out = sh.run(FromManagers([("m1", odd), ("m1", m.Ready(free=3))], sh.now))
    (log_line,) = [i for i in out if isinstance(i, Log)]
    assert log_line.level == logging.ERROR and isinstance(log_line.exc, TypeError)
    assert sh.state.managers["m1"].free == 3


def test_nothing_to_do_is_the_same_empty_answer():
    """Most messages (credit, results) change books only: no list is made for them."""
    sh = make()
    sh.register("m1", credit=0)
    assert sh.state.handle(FromManagers([("m1", m.Ready(free=1))], sh.now)) is NOTHING
    assert sh.state.handle(TasksSubmitted([spec(0)])) is NOTHING


def test_a_manager_hears_a_beat_when_nothing_else_was_sent_for_a_period():
    sh = make()
    sh.register("idle", credit=0)
    sh.register("busy", credit=100)
    sh.tick(after=PERIOD / 2)
    assert sh.beats == []
    for _ in range(4):  # work sent counts as a beat
        sh.submit([spec(int(sh.now * 1000))])
        sh.tick(after=PERIOD / 2)
    assert sh.beats == [["idle"], ["idle"]]
    assert "idle" in sh.state.managers  # beats out are not beats in: it must say something


def test_the_status_once_a_period_with_totals_and_the_latest_heard_listed():
    sh = make()
    sh.state.max_listed = 2
    for i, block in enumerate(["b1", "b1", "b2"]):
        sh.register(f"m{i}", credit=2, block=block)
    sh.submit([spec(i) for i in range(3)])
    sh.tick()
    sh.tick()
    assert len(sh.statuses) == 1  # the first turn's, then one a period
    sh.said("m0", m.Heartbeat(sent_at=0))
    sh.tick(after=1.0)
    status = sh.statuses[-1]
    assert (status.workers_total, status.tasks_running, status.managers_total) == (6, 3, 3)
    assert [mi.manager_id for mi in status.managers] == ["m0", "m2"]
    assert status.managers[0].last_heartbeat == pytest.approx(WALL + sh.now - T0 - 1.0)
    assert {b.block_id: (b.managers, b.workers, b.busy) for b in status.block_load} == {
        "b1": (2, 4, 3), "b2": (1, 2, 0)}


def test_closing_tells_every_manager():
    sh = make()
    sh.register("m1", credit=0)
    sh.register("m2", credit=0)
    sh.run(Closing())
    assert {k: v[-1] for k, v in sh.sent.items()} == {
        k: m.Shutdown(reason="endpoint stopping") for k in ("m1", "m2")}


def test_logs_name_what_happened():
    sh = make()
    sh.register("m1", credit=0)
    sh.tick(after=THRESHOLD + 1)
    assert sh.logs == [(logging.INFO, "manager m1 on host-m1 registered with 2 workers"),
                       (logging.ERROR, "manager m1 missed its heartbeats")]


# ---------------------------------------------------------------- property --

NODES = {"m0": (1, 0), "m1": (4, 0), "m2": (8, 1)}  # cores, gpus


class InterchangeMachine(RuleBasedStateMachine):
    """Managers that register, grant credit, answer (well, with a user error or a
    system failure), hand back, drain, say goodbye, fall silent or register again;
    an agent that submits (some tasks no node can run) and cancels; a clock that
    jumps. The test's managers keep their own books of what they were sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sh = make()
        self.next_id = 0
        self.specs: dict[str, m.TaskSpec] = {}
        self.holds: dict[str, set[str]] = {}  # what each manager was sent and holds
        self.credit: dict[str, int] = {}  # what each granted, less what it was sent
        self.cancel_asked: set[str] = set()
        self.answered: Counter[str] = Counter()
        self.deliveries: Counter[str] = Counter()
        self.seen_sent: dict[str, int] = {}
        self.seen_results = 0

    @initialize(max_retries=st.integers(0, 2),
                managers=st.lists(st.sampled_from(sorted(NODES)), min_size=1, unique=True),
                credit=st.integers(1, 6))
    def start(self, max_retries: int, managers: list[str], credit: int) -> None:
        """Most of the policy needs live managers: start with some."""
        self.sh.state.max_retries = max_retries
        for mid in managers:
            self.register(mid, credit)

    def _account(self) -> None:
        for mid, msgs in self.sh.sent.items():
            for msg in msgs[self.seen_sent.get(mid, 0):]:
                if isinstance(msg, m.Tasks):
                    assert mid in self.credit, f"tasks sent to {mid}, not registered"
                    cores, gpus = NODES[mid]
                    for t in msg.tasks:
                        r = t.resources
                        assert r is None or (r.cores <= cores and r.gpus <= gpus), \
                            f"{t.task_id} placed on {mid}, whose node cannot run it"
                        assert t.task_id not in self.cancel_asked, \
                            f"{t.task_id} sent out after its cancel"
                        self.holds[mid].add(t.task_id)
                        self.deliveries[t.task_id] += 1
                    self.credit[mid] -= len(msg.tasks)
                    assert self.credit[mid] >= 0, f"{mid} was sent more than it granted"
            self.seen_sent[mid] = len(msgs)
        for r in self.sh.results[self.seen_results:]:
            self.answered[r.task_id] += 1
            code = r.error.code if r.error else "ok"
            if r.task_id in self.cancel_asked:  # its manager's own answer, or cancelled
                assert code in ("ok", "error", "worker_lost", "cancelled"), r
            elif code in SYSTEM_FAILURES:
                # failed for a system failure only once its retries were spent
                assert self.specs[r.task_id].attempt == self.sh.state.max_retries, r
        self.seen_results = len(self.sh.results)

    def _said(self, mid: str, msg: m.Message) -> None:
        self.sh.said(mid, msg)
        self._account()

    def _forget(self, mid: str) -> None:
        """The interchange dropped this manager: its tasks are no longer its."""
        self.holds.pop(mid, None)
        self.credit.pop(mid, None)

    live = property(lambda self: sorted(self.credit))

    @rule(mid=st.sampled_from(sorted(NODES)), credit=st.integers(0, 6))
    def register(self, mid: str, credit: int) -> None:
        cores, gpus = NODES[mid]
        self._forget(mid)  # re-registration: the old one's tasks are lost
        self._said(mid, m.ManagerRegister(manager_id=mid, hostname=mid, workers=2,
                                          cores=cores, gpus=gpus, python_version="3.11"))
        self.holds[mid], self.credit[mid] = set(), 0
        if credit:
            self.grant_to(mid, credit)

    def grant_to(self, mid: str, free: int) -> None:
        self.credit[mid] += free
        self._said(mid, m.Ready(free=free))

    @precondition(lambda self: self.live)
    @rule(data=st.data(), free=st.integers(1, 3))
    def grant(self, data: st.DataObject, free: int) -> None:
        self.grant_to(data.draw(st.sampled_from(self.live)), free)

    @rule(n=st.integers(1, 5), data=st.data())
    def submit(self, n: int, data: st.DataObject) -> None:
        batch = []
        for _ in range(n):
            cores, gpus = data.draw(st.sampled_from([(0, 0), (0, 0), (2, 0), (1, 1), (99, 0)]))
            s = spec(self.next_id, cores, gpus)
            self.next_id += 1
            self.specs[s.task_id] = s
            batch.append(s)
        known = sorted(self.sh.state.known)
        batch += [self.specs[t] for t in data.draw(st.lists(st.sampled_from(known), max_size=2))
                  ] if known else []  # duplicates of known tasks: ignored
        self.sh.submit(batch)

    @precondition(lambda self: self.specs)
    @rule(data=st.data(), held=st.booleans())
    def cancel(self, data: st.DataObject, held: bool) -> None:
        """Any task (queued, answered, or held), or only held ones: the races."""
        pool = sorted(set().union(*self.holds.values())) if held else []
        wanted = data.draw(st.lists(st.sampled_from(pool or sorted(self.specs)), max_size=3))
        self.cancel_asked.update(t for t in wanted if t in self.sh.state.known)
        self.sh.cancel([*wanted, "never-seen"])
        self._account()

    @precondition(lambda self: any(self.holds.values()))
    @rule(data=st.data(), how=st.sampled_from(["ok", "ok", "error", "worker_lost"]),
          stale=st.booleans())
    def answer(self, data: st.DataObject, how: str, stale: bool) -> None:
        mid = data.draw(st.sampled_from([k for k, v in sorted(self.holds.items()) if v]))
        picked = data.draw(st.lists(st.sampled_from(sorted(self.holds[mid])), min_size=1,
                                    max_size=3, unique=True))
        free = len(picked)
        if stale:  # and one it may not hold (answered, handed back, or never its)
            picked.append(data.draw(st.sampled_from(sorted(self.specs))))
        results = [ok(t) if how == "ok" else lost(t, how) for t in picked]
        self.holds[mid].difference_update(picked)
        self.credit[mid] += free
        self._said(mid, m.Results(results=results, free=free))

    @precondition(lambda self: any(self.holds.values()))
    @rule(data=st.data())
    def hand_back(self, data: st.DataObject) -> None:
        mid = data.draw(st.sampled_from([k for k, v in sorted(self.holds.items()) if v]))
        back = data.draw(st.lists(st.sampled_from(sorted(self.holds[mid])), min_size=1,
                                  unique=True))
        self.holds[mid].difference_update(back)
        self._said(mid, m.Requeue(task_ids=back))

    @precondition(lambda self: self.live)
    @rule(data=st.data(), what=st.sampled_from(["drain", "bye", "beat", "beat", "beat", "beat"]))
    def manager_says(self, data: st.DataObject, what: str) -> None:
        mid = data.draw(st.sampled_from(self.live))
        if what == "bye":
            self._forget(mid)
        self._said(mid, m.Drain(reason="walltime") if what == "drain"
                   else m.Bye(reason="stopping") if what == "bye" else m.Heartbeat(sent_at=0))

    @rule()
    def a_stranger_speaks(self) -> None:
        self._said("stranger", m.Ready(free=3))
        assert self.sh.sent["stranger"][-1] == m.Shutdown(reason="unknown manager")

    @rule(after=st.sampled_from([0.0, 0.001, 0.001, 0.001, 1.0, PERIOD, THRESHOLD / 2 + 0.5]))
    def tick(self, after: float) -> None:
        self.sh.tick(after)
        self._account()  # (work placed in this turn may go to one found silent after)
        for mid in self.live:  # those silent past the threshold are gone
            if mid not in self.sh.state.managers:
                self._forget(mid)
        assert not self.sh.state.results and not self.sh.state.states  # all reported

    @invariant()
    def every_task_is_in_one_place_or_answered_once(self) -> None:
        state = self.sh.state
        places = [t.task_id for t in state.pending]
        places += [t for mgr in state.managers.values() for t in mgr.tasks]
        places += [r.task_id for r in state.results]  # answered, reported next turn
        assert len(places) == len(set(places)), "a task in two places"
        answered = set(self.answered) | {r.task_id for r in state.results}
        assert set(places) - {r.task_id for r in state.results} == state.known
        for t in self.specs:
            assert (t in state.known) + (t in answered) == 1, f"{t} lost or answered and held"
        assert all(n == 1 for n in self.answered.values()), self.answered
        # a task cancelled while a manager held it is never queued again
        assert not self.cancel_asked & {t.task_id for t in state.pending}

    @invariant()
    def the_books_agree_with_the_managers(self) -> None:
        state = self.sh.state
        assert sorted(state.managers) == self.live
        for mid, mgr in state.managers.items():
            assert set(mgr.tasks) == self.holds[mid]
            assert mgr.free == self.credit[mid] >= 0

    @invariant()
    def retries_are_bounded(self) -> None:
        assert all(s.attempt <= self.sh.state.max_retries for s in self.specs.values())
        assert self.sh.state.cancelling <= self.sh.state.known


InterchangeMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_any_sequence_of_events_keeps_the_invariants = InterchangeMachine.TestCase
