"""ManagerState, fed events by hand: capacity, credit, give-back, cancels, worker
deaths and walltime, each decided without a process, a pipe or a clock (these
took real workers and sleeps before). The last test drives random event
sequences and checks the invariants after each step."""

from __future__ import annotations

import signal
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
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.manager_state import (
    DEEP_PER_WORKER,
    LONG_RUNNING_S,
    PIPE_SAFE_BYTES,
    CancelArrived,
    Closing,
    Feed,
    Instruction,
    KillWorker,
    ManagerState,
    Node,
    Send,
    Started,
    StartWorker,
    StopAsked,
    TasksArrived,
    Tick,
    ToWorker,
    WorkerDied,
    WorkerResults,
)

WORKERS = 2
PREFETCH = 2
T0 = 1_000_000.0
_frames = m.Decoder(m.WORKER_INPUT)


def spec(i: int, payload: bytes = b"") -> m.TaskSpec:
    return m.TaskSpec(task_id=f"t{i}", function_id="f", function=b"", payload=payload)


@dataclass
class Shell:
    """Plays the manager's shell: keeps what the state wrote into each worker's pipe
    (as a worker would read it), and what it sent to the interchange."""

    state: ManagerState
    now: float = T0
    pipes: dict[int, list[m.TaskSpec]] = field(default_factory=dict)
    named: dict[int, set[str]] = field(default_factory=dict)  # cancels each worker read
    sent: list[m.Message] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)

    def run(self, event: object) -> list[Instruction]:
        out = self.state.handle(event)  # type: ignore[arg-type]
        for ins in out:
            if isinstance(ins, StartWorker):
                self.started.append(ins.worker)
                self.pipes[ins.worker], self.named[ins.worker] = [], set()
            elif isinstance(ins, KillWorker):
                self.killed.append(ins.worker)
                del self.pipes[ins.worker], self.named[ins.worker]
            elif isinstance(ins, ToWorker):
                msg = _frames.decode(ins.frame)
                if isinstance(msg, m.Tasks):
                    self.pipes[ins.worker].extend(msg.tasks)
                else:
                    assert isinstance(msg, m.Cancel)
                    self.named[ins.worker].update(msg.task_ids)
            elif isinstance(ins, Send):
                self.sent.append(ins.msg)
        return out

    # what the shell turns into events
    def start(self) -> None:
        self.run(Started(self.now))

    def tasks(self, specs: list[m.TaskSpec]) -> None:
        self.run(TasksArrived(specs, self.now))
        self.run(Feed(self.now))

    def finish(self, worker: int, took: float = 0.0001) -> m.TaskResult:
        """Worker ``worker`` answers the task at the head of its pipe."""
        head = self.pipes[worker].pop(0)
        if head.task_id in self.named[worker]:
            result = m.cancelled_result(head, self.now)
        else:
            result = m.TaskResult(task_id=head.task_id, ok=True, started_at=self.now,
                                  finished_at=self.now + took, attempts=head.attempt + 1)
        self.run(WorkerResults(worker, [result], self.now))
        return result

    def die(self, worker: int, exitcode: int | None = 1) -> None:
        del self.pipes[worker], self.named[worker]
        self.run(WorkerDied(worker, exitcode, self.now))

    def cancel(self, ids: list[str]) -> None:
        self.run(CancelArrived(ids, self.now))

    def tick(self, after: float = 0.001) -> None:
        self.now += after
        self.run(Tick(self.now))

    # what the interchange saw
    def results(self) -> dict[str, m.TaskResult]:
        return {r.task_id: r for msg in self.sent if isinstance(msg, m.Results)
                for r in msg.results}

    def requeued(self) -> list[str]:
        return [t for msg in self.sent if isinstance(msg, m.Requeue) for t in msg.task_ids]

    def granted(self) -> int:
        return sum(msg.free for msg in self.sent if isinstance(msg, m.Ready | m.Results))


def make(workers: int = WORKERS, prefetch: int = PREFETCH, drain_at: float | None = None
         ) -> Shell:
    opts = ManagerOptions(interchange="inline", block_id="b", workers=workers,
                          prefetch=prefetch, drain_at=drain_at)
    shell = Shell(ManagerState(opts, "m1", Node(hostname="node7", cores=4)))
    shell.start()
    return shell


def go_short(sh: Shell) -> None:
    """Run short tasks until the manager counts them short."""
    for i in range(10):
        sh.tasks([spec(10_000 + i)])
        sh.finish(0)
        sh.tick()
    assert sh.state.short_tasks


def test_it_registers_and_grants_its_configured_capacity():
    sh = make()
    assert sh.started == [0, 1]
    register, ready = sh.sent
    assert isinstance(register, m.ManagerRegister)
    assert (register.manager_id, register.hostname, register.workers) == ("m1", "node7", 2)
    assert ready == m.Ready(free=WORKERS + PREFETCH)


def test_capacity_follows_the_tasks_length():
    sh = make()
    go_short(sh)
    sh.tick()
    # short tasks: it asks for more, up to its deep capacity and never past it
    assert sh.state.capacity() == WORKERS * DEEP_PER_WORKER
    assert sh.state.credit + sh.state.held() == WORKERS * DEEP_PER_WORKER
    # long tasks: they fill what was granted; once the average rises it asks
    # only for its configured capacity
    sh.tasks([spec(i) for i in range(sh.state.credit)])
    assert [len(p) for p in sh.pipes.values()] == [2, 2]  # a second task in each pipe
    for _ in range(40):
        for w in (0, 1):
            if sh.pipes[w]:
                sh.finish(w, took=0.05)
        sh.tick()
    assert not sh.state.short_tasks and sh.state.held() == 0
    assert sh.state.credit == WORKERS + PREFETCH


def test_credit_is_never_negative_nor_over_capacity():
    sh = make()
    sh.tasks([spec(i) for i in range(10)])  # more than it granted (a protocol slip)
    assert sh.state.credit == 0
    sh.tick()
    assert sh.state.credit == 0  # it holds more than its capacity: nothing granted
    assert sh.requeued() == ["t4", "t5", "t6", "t7", "t8", "t9"]  # the excess went back


def test_a_running_state_waits_one_turn():
    sh = make()
    sh.tasks([spec(1)])
    sh.tick()
    assert not any(isinstance(msg, m.TaskStates) for msg in sh.sent)  # maybe done soon
    sh.tick()
    (states,) = [msg for msg in sh.sent if isinstance(msg, m.TaskStates)]
    assert [(s.task_id, s.at) for s in states.states] == [("t1", T0)]


def test_tasks_that_turn_long_go_back_for_other_managers():
    sh = make()
    go_short(sh)
    sh.tick()
    ids = [f"t{i}" for i in range(20)]
    sh.tasks([spec(i) for i in range(20)])
    assert sum(len(p) for p in sh.pipes.values()) == 4  # two run, one waits in each pipe
    sh.tick(after=LONG_RUNNING_S / 2)
    assert sh.requeued() == []  # not long yet
    sh.tick(after=LONG_RUNNING_S)
    # what it holds beyond its configured capacity and has not started goes back, in order
    assert sh.requeued() == ids[WORKERS + PREFETCH:]
    assert sh.state.capacity() == WORKERS + PREFETCH and sh.state.held() == 4
    assert not sh.results().keys() & set(ids)


def test_a_large_task_never_waits_behind_a_running_one():
    """A busy worker's pipe takes only what fits in its buffer: a large task written
    behind a running one could block while that worker blocks writing its large
    result (a deadlock the payload benchmark met)."""
    sh = make()
    go_short(sh)
    big = spec(1, payload=b"x" * PIPE_SAFE_BYTES)
    sh.tasks([spec(0), spec(2), big, spec(3)])
    assert sh.pipes == {0: [spec(0)], 1: [spec(2)]}
    assert [t.task_id for t in sh.state.queue] == ["t1", "t3"]  # it waits for an idle worker
    sh.finish(1)
    sh.run(Feed(sh.now))
    assert sh.pipes == {0: [spec(0), spec(3)], 1: [big]}


def test_a_task_waiting_in_a_dead_workers_pipe_runs_elsewhere():
    sh = make()
    go_short(sh)
    sh.tasks([spec(0), spec(1), spec(2), spec(3)])  # worker 0: t0 then t2
    assert [t.task_id for t in sh.pipes[0]] == ["t0", "t2"]
    sh.die(0, exitcode=3)
    assert sh.started[-1] == 0  # replaced
    assert [t.task_id for t in sh.state.queue] == ["t2"]  # it never started: queued again
    sh.run(Feed(sh.now))
    assert [t.task_id for t in sh.pipes[0]] == ["t2"]
    sh.tick()
    lost = sh.results()["t0"]
    assert lost.error == m.ErrorInfo(
        code="worker_lost",
        message="the worker process running the task died (exited with code 3) on node7")
    assert "t2" not in sh.results()


def test_a_worker_terminated_from_outside_stops_the_manager():
    sh = make()
    sh.tasks([spec(0)])
    sh.die(0, exitcode=-signal.SIGTERM)
    assert sh.state.stopping and sh.started == [0, 1]  # not replaced
    sh.tick()
    assert not sh.results()  # no worker_lost: the interchange retries after Bye
    sh.run(Closing(sh.now))
    assert sh.killed == [1] and isinstance(sh.sent[-1], m.Bye)


def test_a_cancelled_running_task_kills_its_worker_and_its_pipe_goes_back():
    sh = make()
    go_short(sh)
    sh.tasks([spec(0), spec(1), spec(2), spec(3), spec(4)])  # worker 0: t0, t2; queued: t4
    sh.cancel(["t0", "t2", "t4"])
    assert sh.killed == [0] and sh.started[-1] == 0
    sh.tick()
    assert {t: r.error.code for t, r in sh.results().items() if r.error} == {
        "t0": "cancelled", "t2": "cancelled", "t4": "cancelled"}
    assert not sh.state.queue and sh.pipes[0] == []  # none of them runs on the replacement


@pytest.mark.parametrize("then", ["the task ahead goes on", "the task ahead is cancelled",
                                  "the worker dies"])
def test_a_cancelled_task_waiting_behind_a_running_one_never_runs(then: str):
    sh = make()
    go_short(sh)
    sh.tasks([spec(0), spec(1), spec(2), spec(3)])  # t2 waits behind t0, t3 behind t1
    sh.cancel(["t2", "t3"])
    assert sh.named == {0: {"t2"}, 1: {"t3"}} and not sh.killed
    if then == "the task ahead goes on":
        sh.finish(0), sh.finish(1)  # the heads end; each worker reports its named task
        assert sh.finish(0).error is not None and sh.finish(1).error is not None
    elif then == "the task ahead is cancelled":
        sh.cancel(["t0", "t1"])
        assert sorted(sh.killed) == [0, 1]
    else:
        sh.die(0), sh.die(1)
    sh.tick()
    codes = {t: r.error.code if r.error else "ok" for t, r in sh.results().items()}
    assert codes["t2"] == codes["t3"] == "cancelled"
    assert not sh.state.queue and not any(sh.pipes.values())  # never queued again
    assert not sh.state.named_cancelled


def test_a_named_cancel_at_the_head_of_a_dying_worker_ends_cancelled():
    """The task ahead ended and the worker died before it answered the cancelled one
    it had been told of: the user cancelled it, so it ends cancelled (before the
    pure core this race ended it "worker_lost")."""
    sh = make()
    go_short(sh)
    sh.tasks([spec(0), spec(1), spec(2), spec(3)])  # t2 waits behind t0
    sh.cancel(["t2"])
    sh.finish(0)  # t2 is at the head now
    sh.die(0, exitcode=-9)
    sh.tick()
    error = sh.results()["t2"].error
    assert error is not None and error.code == "cancelled"
    assert not sh.state.named_cancelled and "t2" not in {t.task_id for t in sh.state.queue}


def test_drain_at_walltime_then_stop_when_empty():
    sh = make(drain_at=T0 + 10)
    sh.tasks([spec(0), spec(1)])
    sh.tick()
    assert not sh.state.draining
    sh.tick(after=10)
    assert sh.state.draining and not sh.state.stopping
    assert sum(isinstance(msg, m.Drain) for msg in sh.sent) == 1
    granted = sh.granted()
    sh.finish(0)
    sh.tick()  # a slot is free, but no credit while draining
    assert "t0" in sh.results() and not sh.state.stopping and sh.granted() == granted
    sh.finish(1)
    sh.tick()
    assert sh.state.stopping and sh.granted() == granted
    assert sum(isinstance(msg, m.Drain) for msg in sh.sent) == 1


def test_a_stopping_manager_grants_nothing_and_says_bye_last():
    sh = make()
    sh.tasks([spec(0), spec(1), spec(2)])
    sh.finish(0)
    sh.run(StopAsked("SIGTERM"))
    granted = sh.granted()
    sh.run(Closing(sh.now))
    assert sorted(sh.killed) == [0, 1]
    assert sh.granted() == granted
    assert isinstance(sh.sent[-2], m.Results) and sh.sent[-2].free == 0
    assert isinstance(sh.sent[-1], m.Bye)


# ---------------------------------------------------------------- property --

class ManagerMachine(RuleBasedStateMachine):
    """An interchange that mostly keeps to the credit, workers that answer their
    head task, die (also by SIGTERM) or are cancelled, and a clock that jumps."""

    def __init__(self) -> None:
        super().__init__()
        self._reset()

    @initialize(short=st.booleans())
    def start(self, short: bool) -> None:
        if short:  # most of the policy lives in the short-task mode: start in it
            go_short(self.sh)
            self.sh.tick()
            self.seen = len(self.sh.sent)

    def _reset(self) -> None:
        self.sh = make(workers=3, prefetch=1)
        self.next_id = 0
        self.specs: dict[str, m.TaskSpec] = {}
        self.in_hand: set[str] = set()  # sent to the manager, not answered
        self.requeued: list[str] = []  # handed back: the interchange may send them again
        self.answers: dict[str, int] = {}
        self.deliveries: dict[str, int] = {}
        self.seen = 0  # messages of sh.sent already accounted
        self.overfed = False  # sent more than the credit (a misbehaving peer)
        self.cancelled: set[str] = set()  # cancelled while queued or in a pipe
        self.bye = False

    def _account(self) -> None:
        for msg in self.sh.sent[self.seen:]:
            ids = ([r.task_id for r in msg.results] if isinstance(msg, m.Results)
                   else msg.task_ids if isinstance(msg, m.Requeue) else [])
            for t in ids:
                assert t in self.in_hand, f"{t} answered but not in the manager's hands"
                if t in self.cancelled:  # it never runs, nor goes back to the queue
                    assert isinstance(msg, m.Results), f"{t} handed back after its cancel"
                    (r,) = [r for r in msg.results if r.task_id == t]
                    assert r.error is not None and r.error.code == "cancelled", r
                self.in_hand.discard(t)
                self.answers[t] = self.answers.get(t, 0) + 1
            if isinstance(msg, m.Requeue):
                self.requeued.extend(msg.task_ids)
            self.bye = self.bye or isinstance(msg, m.Bye)
        self.seen = len(self.sh.sent)

    @precondition(lambda self: not self.bye)
    @rule(n=st.integers(1, 6), beyond=st.booleans(), again=st.booleans())
    def send_tasks(self, n: int, beyond: bool, again: bool) -> None:
        if not beyond:
            n = min(n, self.sh.state.credit)
        self.overfed = self.overfed or n > self.sh.state.credit
        batch = []
        while len(batch) < n and again and self.requeued:
            batch.append(self.specs[self.requeued.pop(0)])
        while len(batch) < n:
            big = self.next_id % 7 == 0  # too large to wait behind a running task
            s = spec(self.next_id, payload=b"z" * PIPE_SAFE_BYTES if big else b"")
            self.next_id += 1
            self.specs[s.task_id] = s
            batch.append(s)
        for s in batch:
            self.in_hand.add(s.task_id)
            self.deliveries[s.task_id] = self.deliveries.get(s.task_id, 0) + 1
        if batch:
            self.sh.tasks(batch)
        self._account()

    @precondition(lambda self: not self.bye and any(self.sh.pipes.values()))
    @rule(data=st.data(), took=st.sampled_from([0.0001, 0.0001, 0.0001, 0.05]))
    def a_worker_answers(self, data: st.DataObject, took: float) -> None:
        busy = sorted(w for w, p in self.sh.pipes.items() if p)
        self.sh.finish(data.draw(st.sampled_from(busy)), took=took)
        self._account()

    @precondition(lambda self: not self.bye and bool(self.sh.pipes))
    @rule(data=st.data(), code=st.sampled_from([1, -9, -signal.SIGTERM]))
    def a_worker_dies(self, data: st.DataObject, code: int) -> None:
        # (those with a cancel named to them first: the likeliest draw)
        named = [w for w in sorted(self.sh.pipes) if self.sh.named[w]]
        self.sh.die(data.draw(st.sampled_from(
            named + [w for w in sorted(self.sh.pipes) if w not in named])), code)
        self._account()

    @precondition(lambda self: not self.bye)
    @rule(data=st.data())
    def cancel_some(self, data: st.DataObject) -> None:
        known = sorted(self.in_hand | set(self.requeued))
        ids = data.draw(st.lists(st.sampled_from(known), max_size=3)) if known else []
        state = self.sh.state
        waiting = {t.task_id for t in state.queue}
        waiting |= {t.task_id for p in state.pipes.values() for t in p.tasks}
        self.cancelled |= waiting & set(ids)
        self.sh.cancel([*ids, "never-seen"])
        self._account()

    @precondition(lambda self: not self.bye and any(len(p) > 1 for p in self.sh.pipes.values()))
    @rule(data=st.data())
    def cancel_one_waiting_in_a_pipe(self, data: st.DataObject) -> None:
        waiting = sorted(t.task_id for p in self.sh.pipes.values() for t in p[1:])
        task_id = data.draw(st.sampled_from(waiting))
        self.cancelled.add(task_id)
        self.sh.cancel([task_id])
        self._account()

    @precondition(lambda self: not self.bye)
    @rule(after=st.sampled_from([0.0, 0.001, 0.001, 0.001, LONG_RUNNING_S, 5.0]))
    def tick(self, after: float) -> None:
        self.sh.tick(after)
        self._account()

    @precondition(lambda self: not self.bye)
    @rule()
    def feed(self) -> None:
        self.sh.run(Feed(self.sh.now))

    @precondition(lambda self: not self.bye)
    @rule()
    def stop_asked(self) -> None:
        self.sh.run(StopAsked("SIGTERM"))

    @precondition(lambda self: not self.bye)
    @rule()
    def close(self) -> None:
        self.sh.run(Closing(self.sh.now))
        self._account()

    @precondition(lambda self: self.bye)
    @rule()
    def after_bye(self) -> None:
        """Every delivery was answered, or was in the manager's hands at its Bye (the
        interchange retries those); then a new manager starts."""
        for t, n in self.deliveries.items():
            assert self.answers.get(t, 0) + (t in self.in_hand) == n
        self._reset()

    @invariant()
    def credit_is_never_negative(self) -> None:
        state = self.sh.state
        assert state.credit >= 0
        if not self.overfed:  # what it asked for and holds stays within its capacity
            assert state.credit + state.held() <= 3 * DEEP_PER_WORKER

    @invariant()
    def each_task_is_answered_once_per_delivery(self) -> None:
        for t, n in self.answers.items():
            assert n <= self.deliveries[t]

    @invariant()
    def no_task_is_lost(self) -> None:
        """Every task in hand is in exactly one place (queued, in a pipe, or answered
        and not sent yet); a stopping manager may drop some: its Bye lets the
        interchange retry them."""
        state = self.sh.state
        places = [t.task_id for t in state.queue]
        places += [t.task_id for p in state.pipes.values() for t in p.tasks]
        places += [r.task_id for r in state.results]
        assert len(places) == len(set(places)), "a task in two places"
        if state.stopping or self.bye:
            assert set(places) <= self.in_hand
        else:
            assert set(places) == self.in_hand

    @invariant()
    def the_pipes_hold_what_was_written_into_them(self) -> None:
        for w, p in self.sh.state.pipes.items():
            assert p.tasks == self.sh.pipes[w]


ManagerMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_any_sequence_of_events_keeps_the_invariants = ManagerMachine.TestCase
