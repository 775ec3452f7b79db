"""The warm pool of containers for tasks' own images, through ManagerState's events
and instructions (no engine, no process, no clock): reuse of an idle container of
the image, a new one while there is room, the least recently used idle one
stopped for another image, waiting when all are busy, cancels, deaths, an image
the engine does not have; and a Hypothesis state machine over random events that
checks the rules after every step, with its own account of which worker was used
when (not the pool's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from funcx_flows import messages as m
from funcx_flows.endpoint.container import ContainerSpec
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.manager_state import (
    CancelArrived,
    Closing,
    KillWorker,
    ManagerState,
    Node,
    Send,
    Started,
    StartWorker,
    TasksArrived,
    Tick,
    ToWorker,
    WorkerDied,
    WorkerNotStarted,
    WorkerResults,
)

WORKERS = 1  # the manager's own (tasks without an image): index 0
T0 = 1_000_000.0
_frames = m.Decoder(m.WORKER_INPUT)


def spec(i: int, image: str | None) -> m.TaskSpec:
    res = None if image is None else m.ResourceSpec(container_image=image)
    return m.TaskSpec(task_id=f"t{i}", function_id="f", function=b"", payload=b"",
                      resources=res)


@dataclass
class Shell:
    """Plays the manager's shell and keeps its own account of the warm workers:
    their image, their task, and when each was last used (took or finished a task,
    counted in the order the instructions and results came)."""

    state: ManagerState
    image: dict[int, str] = field(default_factory=dict)  # live warm workers
    task: dict[int, m.TaskSpec | None] = field(default_factory=dict)
    used: dict[int, int] = field(default_factory=dict)
    uses: int = 0
    own: dict[int, list[m.TaskSpec]] = field(default_factory=dict)  # the manager's workers
    sent: list[m.Message] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    evictions: int = 0

    def run(self, event: object) -> None:
        wanted = set(event.task_ids) if isinstance(event, CancelArrived) else set()
        for ins in self.state.handle(event):  # type: ignore[arg-type]
            if isinstance(ins, StartWorker):
                if ins.image is None:
                    self.own[ins.worker] = []
                else:
                    assert ins.worker not in self.image and ins.worker >= WORKERS
                    self.image[ins.worker], self.task[ins.worker] = ins.image, None
                    assert len(self.image) <= self.state.opts.container.max_warm
            elif isinstance(ins, KillWorker):
                self.stopped.append(ins.worker)
                if ins.worker in self.own:
                    del self.own[ins.worker]
                    continue
                task = self.task[ins.worker]
                if task is not None:  # a running task's container: only for its cancel
                    assert task.task_id in wanted or isinstance(event, Closing)
                else:  # stopped to make room: the least recently used idle one
                    idle = [w for w in self.image if self.task[w] is None]
                    assert ins.worker in idle
                    assert self.used[ins.worker] == min(self.used[w] for w in idle)
                    self.evictions += 1
                del self.image[ins.worker], self.task[ins.worker]
            elif isinstance(ins, ToWorker):
                msg = _frames.decode(ins.frame)
                assert isinstance(msg, m.Tasks)
                if ins.worker in self.own:
                    assert all(t.resources is None for t in msg.tasks)
                    self.own[ins.worker].extend(msg.tasks)
                    continue
                (task,) = msg.tasks
                assert self.task[ins.worker] is None  # one task at a time
                assert task.resources.container_image == self.image[ins.worker]
                self.uses += 1
                self.task[ins.worker], self.used[ins.worker] = task, self.uses
            elif isinstance(ins, Send):
                self.sent.append(ins.msg)

    def arrive(self, specs: list[m.TaskSpec]) -> None:
        self.run(TasksArrived(specs, T0))

    def finish(self, worker: int) -> None:
        task = self.task[worker]
        assert task is not None
        self.uses += 1
        self.task[worker], self.used[worker] = None, self.uses
        self.run(WorkerResults(worker, [m.TaskResult(task_id=task.task_id, ok=True)], T0))

    def results(self) -> dict[str, m.TaskResult]:
        self.run(Tick(T0))
        return {r.task_id: r for msg in self.sent if isinstance(msg, m.Results)
                for r in msg.results}

    def worker_of(self, task_id: str) -> int:
        (w,) = [w for w, t in self.task.items() if t is not None and t.task_id == task_id]
        return w


def make(max_warm: int = 2) -> Shell:
    opts = ManagerOptions(interchange="inline", workers=WORKERS, prefetch=8,
                          container=ContainerSpec(type="podman", image="",
                                                  max_warm=max_warm))
    sh = Shell(ManagerState(opts, "m1", Node(hostname="node7", cores=4)))
    sh.run(Started(T0))
    return sh


def test_the_second_task_of_an_image_reuses_its_idle_container():
    sh = make()
    sh.arrive([spec(1, "a")])
    first = sh.worker_of("t1")
    sh.finish(first)
    sh.arrive([spec(2, "a")])
    assert sh.worker_of("t2") == first and list(sh.image) == [first]
    assert sh.stopped == []


def test_tasks_without_an_image_go_to_the_managers_own_workers():
    sh = make()
    sh.arrive([spec(1, None), spec(2, "a")])
    sh.run(Tick(T0))
    assert [t.task_id for t in sh.own[0]] == ["t1"]
    assert sh.task[sh.worker_of("t2")].task_id == "t2"


def test_the_least_recently_used_idle_container_makes_room_for_another_image():
    sh = make(max_warm=2)
    sh.arrive([spec(1, "a"), spec(2, "b")])
    wa, wb = sh.worker_of("t1"), sh.worker_of("t2")
    sh.finish(wb)  # b idle first, then a: b is the least recently used
    sh.finish(wa)
    sh.arrive([spec(3, "c")])
    assert sh.stopped == [wb] and sh.image[sh.worker_of("t3")] == "c"
    assert set(sh.image) == {wa, sh.worker_of("t3")}


def test_with_every_container_busy_a_new_image_waits_and_others_pass_it():
    sh = make(max_warm=2)
    sh.arrive([spec(1, "a"), spec(2, "b")])
    wa, wb = sh.worker_of("t1"), sh.worker_of("t2")
    sh.finish(wb)
    sh.arrive([spec(3, "c"), spec(4, "b")])  # c: no room unless b's goes; it does
    assert sh.stopped == [wb]
    sh.arrive([spec(5, "b")])  # now all busy: they wait
    assert [t.task_id for t in sh.state.warm.queue] == ["t4", "t5"] and len(sh.image) == 2
    assert sh.state.held() == 4  # (t4 waits too)
    sh.finish(wa)  # a's container is idle and the least recently used: it goes
    assert sh.stopped == [wb, wa] and sh.image[sh.worker_of("t4")] == "b"


def test_cancel_death_and_a_missing_image():
    sh = make(max_warm=2)
    sh.arrive([spec(1, "a"), spec(2, "b"), spec(3, "a")])
    wa, wb = sh.worker_of("t1"), sh.worker_of("t2")
    assert sh.state.warm.queue[0].task_id == "t3"
    sh.run(CancelArrived(["t1", "t3"], T0))  # running: its container goes
    assert wa in sh.stopped and "t3" not in {t.task_id for t in sh.state.warm.queue}
    sh.run(WorkerDied(wb, 125, T0))
    sh.image.pop(wb), sh.task.pop(wb)
    sh.arrive([spec(4, "nope"), spec(5, "a"), spec(6, "nope"), spec(7, "nope")])
    w4 = sh.worker_of("t4")
    sh.image.pop(w4), sh.task.pop(w4)
    assert [t.task_id for t in sh.state.warm.queue] == ["t6", "t7"]  # (t5: a new "a")
    sh.run(WorkerNotStarted(w4, "container_image: podman has no image 'nope'", T0))
    assert not sh.state.warm.queue  # those waiting for the same image failed with it
    sh.finish(sh.worker_of("t5"))
    done = sh.results()
    assert done["t1"].error.code == done["t3"].error.code == "cancelled"
    assert done["t2"].error.code == "worker_lost"
    assert "container of image 'b' ended (exited with code 125)" in done["t2"].error.message
    for t in ("t4", "t6", "t7"):
        assert done[t].error.code == "container_error"
        assert "podman has no image 'nope'" in done[t].error.message
    assert done["t5"].ok
    assert list(sh.state.warm.workers) == list(sh.image) and sh.state.held() == 0


def test_closing_stops_every_container():
    sh = make()
    sh.arrive([spec(1, "a"), spec(2, "b")])
    warm = {sh.worker_of("t1"), sh.worker_of("t2")}
    sh.run(Closing(T0))
    assert set(sh.stopped) == warm | {0} and sh.image == {}


IMAGES = st.sampled_from(["a", "b", "c", None])


class WarmPoolMachine(RuleBasedStateMachine):
    """Random arrivals (with or without an image), finishes, deaths, engines without
    the image and cancels; the shell's checks run on every instruction."""

    @initialize(max_warm=st.integers(1, 3))
    def start(self, max_warm: int) -> None:
        self.sh = make(max_warm)
        self.n = 0
        self.taken: set[str] = set()

    @rule(images=st.lists(IMAGES, min_size=1, max_size=4))
    def arrive(self, images: list[str | None]) -> None:
        specs = [spec(self.n + i, image) for i, image in enumerate(images)]
        self.n += len(specs)
        self.taken.update(s.task_id for s in specs)
        self.sh.arrive(specs)

    @precondition(lambda self: any(t is not None for t in self.sh.task.values()))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        busy = sorted(w for w, t in self.sh.task.items() if t is not None)
        self.sh.finish(data.draw(st.sampled_from(busy)))

    @precondition(lambda self: bool(self.sh.image))
    @rule(data=st.data(), started=st.booleans())
    def lose(self, data: st.DataObject, started: bool) -> None:
        w = data.draw(st.sampled_from(sorted(self.sh.image)))
        del self.sh.image[w], self.sh.task[w]
        self.sh.run(WorkerDied(w, 1, T0) if started
                    else WorkerNotStarted(w, "no such image", T0))

    @precondition(lambda self: bool(self.taken))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self.sh.run(CancelArrived([data.draw(st.sampled_from(sorted(self.taken)))], T0),
                    )

    @rule()
    def own_workers_finish(self) -> None:
        pipe = self.sh.own.get(0)
        if pipe:
            head = pipe.pop(0)
            self.sh.run(WorkerResults(0, [m.TaskResult(task_id=head.task_id, ok=True)], T0))
        self.sh.run(Tick(T0))

    @invariant()
    def each_task_answered_once_or_held(self) -> None:
        answered = [r.task_id for msg in self.sh.sent if isinstance(msg, m.Results)
                    for r in msg.results]
        assert len(answered) == len(set(answered))
        answered += [t for msg in self.sh.sent if isinstance(msg, m.Requeue)
                     for t in msg.task_ids]  # (beyond the capacity: back to the interchange)
        warm = self.sh.state.warm
        held = ({t.task_id for t in warm.queue}
                | {w.task.task_id for w in warm.workers.values() if w.task is not None}
                | {t.task_id for t in self.sh.state.queue}
                | {t.task_id for p in self.sh.state.pipes.values() for t in p.tasks}
                | {r.task_id for r in self.sh.state.results})
        assert self.taken <= held | set(answered)
        assert len(warm.workers) <= warm.limit
        assert set(warm.workers) == set(self.sh.image)

    @invariant()
    def nothing_waits_that_could_run(self) -> None:
        """A waiting task has no idle container of its image, nor room for one."""
        warm = self.sh.state.warm
        for t in warm.queue:
            assert not any(w.task is None and w.image == t.resources.container_image
                           for w in warm.workers.values())
            assert len(warm.workers) == warm.limit and warm.idle_lru() is None


TestWarmPoolMachine = WarmPoolMachine.TestCase
TestWarmPoolMachine.settings = settings(max_examples=400, stateful_step_count=30,
                                        deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
