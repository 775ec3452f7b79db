"""A manager's policy as a pure state machine: ``handle(event) -> instructions``.

What a manager decides (which task goes into which worker's pipe, how many tasks
it asks for, what it hands back, what a cancel or a worker's death means for each
task) is here, apart from what it does (fork, pipes, sockets: ``manager.py``, the
shell). Nothing here reads a clock, touches a file descriptor or sends: the
shell turns what happened into events, with the time, and carries out the
instructions that come back, in order::

    events (shell -> state)                     instructions (state -> shell)
    Started         the manager starts          StartWorker(i)  fork/exec worker i
    TasksArrived    Tasks from the interchange  KillWorker(i)   kill worker i, forget it
    CancelArrived   Cancel from the interchange ToWorker(i, f)  write frame f into its pipe
    WorkerResults   a worker's pipe said        Send(msg)       to the interchange
    WorkerDied      a worker's sentinel fired
    StopAsked       SIGTERM, Shutdown, silence
    Feed            all that happened is in     (tasks go into pipes)
    Tick            the shell's turn            (Feed, then walltime, give-back, credit)
    Closing         the shell ends
    WorkerNotStarted  no such image             StartWorker(i, image): a task's own
                                                container (warmpool.py: the warm pool)

Tasks go into pipes only on ``Feed`` (and ``Tick``), once the shell has turned
everything its poll saw into events: a worker whose death the shell has seen but
not yet reported must not be handed a task that would then be lost with it.

Capacity follows the tasks' length: ``workers + prefetch`` for tasks longer
than SHORT_TASK_S (a moving average of the workers' reports); for shorter ones,
where each message and wake-up costs more than the task, DEEP_PER_WORKER per
worker and a second task in each pipe. When a task has run LONG_RUNNING_S, or
the average rises, what is held beyond the configured capacity and not yet in a
pipe goes back (``Requeue``). Credit: the manager grants its capacity less what
it holds and what is granted already (``Ready``, or the ``free`` of
``Results``), never while draining or stopping.

Cancels: a worker running a cancelled task is killed (and replaced); a queued
one is answered at once; one waiting in a pipe behind a task that goes on is
named to that worker (a ``Cancel`` frame: the worker reads its whole pipe before
it starts a task) and remembered, so that if the worker dies first it ends
cancelled rather than going back to the queue. A task waiting in the pipe of a
worker that dies otherwise goes back to the queue (it never started).

Invariants (tests/unit/endpoint/test_manager_state.py drives random event
sequences against them): each task received is answered once (a result or a
``Requeue``) or held (queued or in a pipe) until the manager says ``Bye``; a task
is in at most one place; the credit is never negative.

(One module past 400 lines on purpose: the events, the instructions and the
handlers that keep these invariants together read as one.)
"""

from __future__ import annotations

import collections
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from funcx_flows import messages as m
from funcx_flows.endpoint.launch import ManagerOptions

if TYPE_CHECKING:
    from funcx_flows.endpoint.warmpool import WarmPool

SHORT_TASK_S = 0.002
DEEP_PER_WORKER = 16
LONG_RUNNING_S = 0.02  # a task running this long shows that the tasks are not short now
RUN_TIME_WEIGHT = 0.2  # of the newest task in the moving average of run times
# A task goes into the pipe of a busy worker only if it fits in the pipe's buffer
# (64 KiB on Linux) at once: a larger write would block until the worker reads,
# while the worker may be blocked writing a large result back (both stuck).
PIPE_SAFE_BYTES = 32 * 1024


@dataclass(frozen=True)
class Node:
    """What the manager's node offers (measured by the shell)."""

    hostname: str
    cores: int
    gpus: int = 0
    python_version: str = ""


# (events and instructions are plain slotted dataclasses: a frozen one costs three
# times as much to make, and one of them passes per task each way)

# ----------------------------------------------------------------- events --

@dataclass(slots=True)
class Started:
    now: float


@dataclass(slots=True)
class TasksArrived:
    tasks: list[m.TaskSpec]
    now: float


@dataclass(slots=True)
class CancelArrived:  # after the shell read the pipes: a task may be done, its result first
    task_ids: list[str]
    now: float


@dataclass(slots=True)
class WorkerResults:
    worker: int
    results: list[m.TaskResult]
    now: float


@dataclass(slots=True)
class WorkerDied:
    worker: int
    exitcode: int | None  # as multiprocessing says it: -N for signal N
    now: float


@dataclass(slots=True)
class StopAsked:
    reason: str


@dataclass(slots=True)
class Feed:
    now: float


@dataclass(slots=True)
class Tick:
    now: float


@dataclass(slots=True)
class Closing:
    now: float


@dataclass(slots=True)
class WorkerNotStarted:  # the engine has no image for a StartWorker(i, image)
    worker: int
    reason: str
    now: float


Event = Union[Started, TasksArrived, CancelArrived, WorkerResults, WorkerDied, StopAsked,  # noqa: UP007
              Feed, Tick, Closing, WorkerNotStarted]

# ----------------------------------------------------------- instructions --

@dataclass(slots=True)
class StartWorker:
    worker: int
    image: str | None = None  # a task's own container image (warmpool.py)


@dataclass(slots=True)
class KillWorker:
    worker: int


@dataclass(slots=True)
class ToWorker:
    worker: int
    frame: bytes  # encoded Tasks or Cancel


@dataclass(slots=True)
class Send:
    msg: m.Message


Instruction = Union[StartWorker, KillWorker, ToWorker, Send]  # noqa: UP007


@dataclass(slots=True)
class Pipe:
    """What one worker holds: the first task runs, the rest wait in its pipe."""

    worker: int
    tasks: list[m.TaskSpec] = field(default_factory=list)
    head_since: float = 0.0  # when the first of ``tasks`` started (wall clock)


class ManagerState:
    def __init__(self, opts: ManagerOptions, manager_id: str, node: Node) -> None:
        self.opts = opts
        self.manager_id = manager_id
        self.node = node
        self.queue: collections.deque[m.TaskSpec] = collections.deque()
        self.pipes: dict[int, Pipe] = {}
        self.results: list[m.TaskResult] = []  # answered, not yet sent
        # A "running" state waits one turn: a task that finishes by then (most short
        # ones) needs none, and its result carries the times anyway.
        self.started: dict[str, tuple[float, int]] = {}  # task id -> (at, turn)
        self.named_cancelled: set[str] = set()  # cancels written into a worker's pipe
        self.turn = 0
        self.credit = 0  # granted to the interchange and not yet used by it
        self.run_time_s: float | None = None  # moving average of the tasks' run times
        self.draining = False
        self.stopping = False
        self._handlers: dict[type[Any], Callable[[Any, list[Instruction]], None]] = {
            Started: self._started, TasksArrived: self._tasks_arrived,
            CancelArrived: self._cancel_arrived, WorkerResults: self._worker_results,
            WorkerDied: self._worker_died, StopAsked: self._stop_asked,
            Feed: lambda e, out: self._feed(e.now, out), Tick: self._tick,
            Closing: self._closing, WorkerNotStarted: self._not_started}
        # tasks that ask for a container image of their own (None: no engine here)
        self.warm: WarmPool | None = None
        if opts.container is not None:
            from funcx_flows.endpoint.warmpool import WarmPool  # (it imports this module)

            self.warm = WarmPool(opts.container.max_warm, first_index=opts.workers)
            self._handlers[TasksArrived] = self._tasks_arrived_warm  # (no cost without)

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        self._handlers[type(event)](event, out)
        return out

    # ------------------------------------------------------------- queries --

    @property
    def short_tasks(self) -> bool:
        return self.run_time_s is not None and self.run_time_s < SHORT_TASK_S

    def capacity(self) -> int:
        """How many tasks this manager wants to hold (queued, in pipes, running)."""
        o = self.opts
        base: int = o.workers + o.prefetch
        return max(base, o.workers * DEEP_PER_WORKER) if self.short_tasks else base

    def held(self) -> int:
        n = len(self.queue)
        for p in self.pipes.values():  # (a loop, not sum() of a generator: every turn)
            n += len(p.tasks)
        return n if self.warm is None else n + self.warm.held()

    @property
    def watching(self) -> bool:
        """Whether the next Tick should come soon (within 50 ms): a "running" state
        waits for its turn, or short tasks may be turning long."""
        return bool(self.started) or (self.short_tasks and self.held() > 0)

    # ------------------------------------------------------------ handlers --

    def _started(self, e: Started, out: list[Instruction]) -> None:
        o, n = self.opts, self.node
        for i in range(o.workers):
            self.pipes[i] = Pipe(i)
            out.append(StartWorker(i))
        out.append(Send(m.ManagerRegister(
            manager_id=self.manager_id, hostname=n.hostname, block_id=o.block_id,
            workers=o.workers, cores=n.cores, gpus=n.gpus, python_version=n.python_version,
            drain_at=o.drain_at)))
        self.credit = self.capacity()
        out.append(Send(m.Ready(free=self.credit)))

    def _tasks_arrived(self, e: TasksArrived, out: list[Instruction]) -> None:
        self.queue.extend(e.tasks)
        self.credit = max(0, self.credit - len(e.tasks))

    def _feed(self, now: float, out: list[Instruction]) -> None:
        """Idle workers first; then, for short tasks, a second task into each pipe."""
        queue = self.queue
        if not queue:
            return
        depth = 2 if self.short_tasks else 1
        for slot in range(depth):
            for p in self.pipes.values():
                if not queue:
                    return
                if len(p.tasks) != slot:
                    continue
                frame = m.encode(m.Tasks(tasks=[queue[0]]))
                if slot and len(frame) > PIPE_SAFE_BYTES:
                    return  # it waits here for an idle worker (see PIPE_SAFE_BYTES)
                spec = queue.popleft()
                p.tasks.append(spec)
                out.append(ToWorker(p.worker, frame))
                if slot == 0:
                    p.head_since = now
                    self.started[spec.task_id] = (now, self.turn)

    def _worker_results(self, e: WorkerResults, out: list[Instruction]) -> None:
        p = self.pipes.get(e.worker)
        if p is None:
            if self.warm is not None:
                self._warm_ended(self.warm.finished(e.worker, e.results), e.now, out)
            return
        for r in e.results:
            tasks = p.tasks
            for i, t in enumerate(tasks):
                if t.task_id == r.task_id:
                    del tasks[i]
                    break
            else:
                continue  # not a task of this worker's: nothing to answer
            self.results.append(r)
            self.started.pop(r.task_id, None)
            self.named_cancelled.discard(r.task_id)
            if r.started_at and r.finished_at:
                took = max(r.finished_at - r.started_at, 0.0)
                self.run_time_s = took if self.run_time_s is None else (
                    (1 - RUN_TIME_WEIGHT) * self.run_time_s + RUN_TIME_WEIGHT * took)
        if p.tasks and p.tasks[0].task_id not in self.started:
            p.head_since = e.now  # it runs now
            self.started[p.tasks[0].task_id] = (e.now, self.turn)

    def _worker_died(self, e: WorkerDied, out: list[Instruction]) -> None:
        if self.warm is not None and e.worker in self.warm.workers:
            lost = self.warm.died(e.worker, e.exitcode, self.node.hostname, e.now)
            if self.stopping or e.exitcode == -signal.SIGTERM:  # as below: Bye says it
                self.stopping = True
                return
            self._warm_ended([] if lost is None else [lost], e.now, out)
            return
        self._lose_worker(e.worker, e.exitcode, e.now, out, cancelled=False)

    def _lose_worker(self, worker: int, exitcode: int | None, now: float,
                     out: list[Instruction], *, cancelled: bool) -> None:
        p = self.pipes.pop(worker, None)
        if p is None:
            return
        lost, waiting = (p.tasks[0], p.tasks[1:]) if p.tasks else (None, [])
        # tasks still in the dead worker's pipe never started: back to the queue, but
        # those already cancelled (named to the worker) end cancelled here
        back = []
        for spec in waiting:
            if spec.task_id in self.named_cancelled:
                self.named_cancelled.discard(spec.task_id)
                self.results.append(m.cancelled_result(spec, now))
            else:
                back.append(spec)
        self.queue.extendleft(reversed(back))
        if lost is not None:
            self.started.pop(lost.task_id, None)
        if not cancelled and (self.stopping or exitcode == -signal.SIGTERM):
            # Terminated from outside (the scheduler ends the pilot; it signals every
            # process of the job): the manager ends too and says Bye, and the
            # interchange retries its tasks elsewhere; a "worker lost" here could be
            # retried on this very manager, which is going away.
            self.stopping = True
            return
        if lost is not None:
            if cancelled or lost.task_id in self.named_cancelled:
                self.named_cancelled.discard(lost.task_id)
                err = m.ErrorInfo(code="cancelled", message="cancelled by the user")
            else:
                how = (f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
                       else f"exited with code {exitcode}")
                err = m.ErrorInfo(
                    code="worker_lost",
                    message=f"the worker process running the task died ({how}) on "
                            f"{self.node.hostname}")
            self.results.append(m.TaskResult(task_id=lost.task_id, ok=False, error=err,
                                             attempts=lost.attempt + 1, finished_at=now))
        if not self.stopping:
            self.pipes[worker] = Pipe(worker)
            out.append(StartWorker(worker))

    def _cancel_arrived(self, e: CancelArrived, out: list[Instruction]) -> None:
        wanted = set(e.task_ids)
        for p in list(self.pipes.values()):
            # A worker running a cancelled task is killed; what waited in its pipe
            # goes back to the queue, which is swept next. A cancelled task waiting
            # behind a task that goes on is named to the worker, which reports it
            # cancelled instead of running it.
            if p.tasks and p.tasks[0].task_id in wanted:
                out.append(KillWorker(p.worker))
                self._lose_worker(p.worker, None, e.now, out, cancelled=True)
                continue
            behind = [t.task_id for t in p.tasks[1:] if t.task_id in wanted]
            if behind:
                # remembered until its answer comes: if the worker dies first, the
                # task must not go back to the queue and run on its replacement
                self.named_cancelled.update(behind)
                out.append(ToWorker(p.worker, m.encode(m.Cancel(task_ids=behind))))
        kept: collections.deque[m.TaskSpec] = collections.deque()
        for spec in self.queue:
            if spec.task_id in wanted:
                self.results.append(m.cancelled_result(spec, e.now))
            else:
                kept.append(spec)
        self.queue = kept
        if self.warm is not None:
            self._warm_ended(self.warm.cancel(wanted, e.now, out), e.now, out)

    def _tasks_arrived_warm(self, e: TasksArrived, out: list[Instruction]) -> None:
        """With an engine: tasks that ask for an image go to the warm pool."""
        assert self.warm is not None
        self.queue.extend(self.warm.take(e.tasks))
        self.credit = max(0, self.credit - len(e.tasks))
        self._feed_warm(e.now, out)

    def _not_started(self, e: WorkerNotStarted, out: list[Instruction]) -> None:
        if self.warm is not None:
            self._warm_ended(self.warm.not_started(e.worker, e.reason, e.now), e.now, out)

    def _feed_warm(self, now: float, out: list[Instruction]) -> None:
        assert self.warm is not None
        for spec in self.warm.feed(out):
            self.started[spec.task_id] = (now, self.turn)

    def _warm_ended(self, results: list[m.TaskResult], now: float,
                    out: list[Instruction]) -> None:
        """Tasks of the warm pool answered: its workers may take what waits."""
        for r in results:
            self.results.append(r)
            self.started.pop(r.task_id, None)
        if not self.stopping:
            self._feed_warm(now, out)

    def _stop_asked(self, e: StopAsked, out: list[Instruction]) -> None:
        self.stopping = True

    def _tick(self, e: Tick, out: list[Instruction]) -> None:
        """The shell's turn: feed, walltime, then tell the interchange what happened."""
        self._feed(e.now, out)
        o = self.opts
        if o.drain_at is not None and not self.draining and e.now >= o.drain_at:
            self.draining = True
            out.append(Send(m.Drain(reason="walltime ends soon")))
        if self.draining and not self.held():
            self.stopping = True
        self._flush(e.now, out)

    def _closing(self, e: Closing, out: list[Instruction]) -> None:
        """Kill the workers, report what is left, and say goodbye (the interchange
        retries or fails what the workers held)."""
        self.stopping = True
        for p in self.pipes.values():
            out.append(KillWorker(p.worker))
        if self.warm is not None:
            self.warm.close(out)
        self._flush(e.now, out)
        self.pipes.clear()
        self.queue.clear()
        out.append(Send(m.Bye(reason="manager stopping")))

    # ---------------------------------------------------------- to the wire --

    def _give_back(self, now: float, out: list[Instruction]) -> tuple[int, int]:
        """Tasks turned long: what is held beyond the capacity and still queued here
        (not in a worker's pipe) goes back to the interchange, newest first. Returns
        the capacity and what is held then (once per turn: _flush needs both)."""
        if self.short_tasks:
            busy = [p.head_since for p in self.pipes.values() if p.tasks]
            running_for = now - min(busy) if busy else 0.0
            if running_for >= LONG_RUNNING_S:
                self.run_time_s = running_for
        capacity, held = self.capacity(), self.held()
        excess = min(held - capacity, len(self.queue))
        if excess > 0:
            back = [self.queue.pop() for _ in range(excess)]
            out.append(Send(m.Requeue(task_ids=[t.task_id for t in reversed(back)])))
            held -= excess
        return capacity, held

    def _flush(self, now: float, out: list[Instruction]) -> None:
        self.turn += 1
        capacity, held = self._give_back(now, out)
        due = [t for t, (_, turn) in self.started.items() if turn < self.turn - 1]
        if due:  # still running a whole turn later: now they are worth a message
            out.append(Send(m.TaskStates(states=[
                m.TaskState(task_id=t, state="running", at=self.started.pop(t)[0])
                for t in due])))
        free = 0 if self.draining or self.stopping else max(0, capacity - self.credit - held)
        if self.results:
            out.append(Send(m.Results(results=self.results, free=free)))
            self.results = []
        elif free:
            out.append(Send(m.Ready(free=free)))
        self.credit += free
