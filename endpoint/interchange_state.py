"""The interchange's policy as a pure state machine: ``handle(event) -> instructions``.

What the interchange decides (which queued task goes to which manager; what a
manager's answer, hand-back, silence or goodbye means for each task it holds;
retries; cancels that race results; when managers hear a beat and the agent a
status) is here, apart from what it does (the ROUTER socket, managers in the
agent's loop, the clock, the log: ``interchange.py``, the shell). The shell
turns what happened into events, with the time, and carries out the
instructions that come back, in order::

    events (shell -> state)                  instructions (state -> shell)
    TasksSubmitted   the agent's tasks       ToManager(id, msg)   Tasks, Cancel, Shutdown
    CancelRequested  the agent's cancel      Beat(ids, sent_at)   a Heartbeat to each
    FromManagers     managers' messages      Report(results, states, status)  to the agent
    Tick             the shell's turn        Log(level, text)     to the log
    Closing          the endpoint stops      Note(text)           a recent error

Managers' messages are events as they came (Register, Ready, Results,
TaskStates, Requeue, Drain, Bye, Heartbeat), with the sender's id, in a batch
(all that one read of the socket gave) with the time; one bad or mishandled
message is dropped and logged, the rest of its batch handled. Work is
placed on ``Tick``, which also finds silent managers, beats, and reports (one
``Report`` a turn at most). Managers grant credits (``Ready(free)``, or the
``free`` of ``Results``); each gets at most that many tasks, earliest registered
first, and only tasks whose resource hints its node meets (others wait, in
their order). A task lost to a system failure (worker, manager or pilot) goes
back to the head of the queue up to ``max_retries`` times, then fails with
the cause. A task cancelled while a manager holds it is remembered
(``cancelling``) until its answer: handed back or lost instead, it ends
cancelled, never queued again.

Invariants (tests/unit/endpoint/test_interchange_state.py drives random event
sequences against them): a task accepted is in one place (queued, or held by
one live manager) until answered, and answered once; no manager is sent more
than it granted, nor a task its node cannot run; at most ``max_retries``
retries.

Speed: no turn walks every manager (those with credit, the least recently heard
and the least recently sent to are kept apart, in ordered dicts: see
benchmarks/bench_scale.py); events and instructions are slotted dataclasses (as
in manager_state.py), one per batch of messages or tasks, never one per task; ``handle``
answers the same empty tuple when there is nothing to do. (Past 400 lines on
purpose: the events, instructions and handlers that keep the invariants read
as one.)
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from funcx_flows import messages as m
from funcx_flows.errors import ProtocolError

SYSTEM_FAILURES = frozenset({"worker_lost", "manager_lost", "pilot_ended"})
STATUS_PERIOD_S = 1.0
MAX_LISTED_MANAGERS = 100  # in the status; totals and per-block load cover all
_UNKNOWN = m.Shutdown(reason="unknown manager")

# ----------------------------------------------------------------- events --


@dataclass(slots=True)
class TasksSubmitted:
    tasks: list[m.TaskSpec]


@dataclass(slots=True)
class CancelRequested:
    task_ids: list[str]
    now: float


@dataclass(slots=True)
class FromManagers:
    # (manager id, message): its routing id, or the id it was attached with in the loop
    messages: list[tuple[str, m.Message]]
    now: float


@dataclass(slots=True)
class Tick:
    now: float  # monotonic: heartbeats and status periods
    wall: float  # unix time: what the status and heartbeats carry


@dataclass(slots=True)
class Closing:
    pass


Event = Union[TasksSubmitted, CancelRequested, FromManagers, Tick, Closing]  # noqa: UP007

# ----------------------------------------------------------- instructions --


@dataclass(slots=True)
class ToManager:
    manager_id: str
    msg: m.Message


@dataclass(slots=True)
class Beat:
    manager_ids: list[str]
    sent_at: float


@dataclass(slots=True)
class Report:
    results: list[m.TaskResult]
    states: list[m.TaskState]
    status: m.EndpointStatus | None  # recent_errors are the shell's to fill in


@dataclass(slots=True)
class Log:
    level: int
    text: str
    exc: BaseException | None = None  # a bug met while handling a message


@dataclass(slots=True)
class Note:
    text: str


Instruction = Union[ToManager, Beat, Report, Log, Note]  # noqa: UP007
NOTHING: tuple[()] = ()


@dataclass(slots=True)
class ManagerRecord:
    """What the interchange knows of one live manager."""

    manager_id: str
    info: m.ManagerRegister
    seq: int  # registration order: work goes to the earliest registered first
    last_heard: float
    last_sent: float
    free: int = 0  # credit granted and not yet used
    tasks: dict[str, m.TaskSpec] = field(default_factory=dict)
    draining: bool = False

    def fits(self, spec: m.TaskSpec) -> bool:
        r = spec.resources
        if r is None:
            return True
        return r.cores <= max(self.info.cores, 1) and r.gpus <= self.info.gpus


class InterchangeState:
    def __init__(self, *, max_retries: int = 0, heartbeat_period_s: float = 2.0,
                 heartbeat_threshold_s: float = 10.0,
                 max_listed: int = MAX_LISTED_MANAGERS) -> None:
        self.max_retries = max_retries
        self.heartbeat_period_s = heartbeat_period_s
        self.heartbeat_threshold_s = heartbeat_threshold_s
        self.max_listed = max_listed
        self.pending: collections.deque[m.TaskSpec] = collections.deque()
        self.known: set[str] = set()  # task ids queued or on a manager
        # cancelled while on a manager, whose answer has not come: if the manager hands
        # them back (Requeue) or is lost, they end as cancelled, not queued again
        self.cancelling: set[str] = set()
        self.managers: dict[str, ManagerRecord] = {}
        # The same managers, ordered for the turn's questions (see the module docstring).
        self._ready: dict[str, ManagerRecord] = {}  # free > 0 and not draining
        self._by_heard: collections.OrderedDict[str, ManagerRecord] = collections.OrderedDict()
        self._by_sent: collections.OrderedDict[str, ManagerRecord] = collections.OrderedDict()
        self._seq = itertools.count()
        self.results: list[m.TaskResult] = []  # answered, not yet reported
        self.states: list[m.TaskState] = []
        self._last_status = float("-inf")
        self._out: list[Instruction] = []
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            TasksSubmitted: self._submitted, CancelRequested: self._cancel,
            FromManagers: self._from_managers, Tick: self._tick, Closing: self._closing}
        self._said: dict[type[Any], Callable[[ManagerRecord, Any], None]] = {
            m.Ready: self._ready_msg, m.Results: self._results, m.TaskStates: self._states,
            m.Requeue: self._requeue, m.Drain: self._drain, m.Bye: self._bye}

    def handle(self, event: Event) -> Sequence[Instruction]:
        self._handlers[type(event)](event)
        out = self._out
        if not out:
            return NOTHING
        self._out = []
        return out

    # ------------------------------------------------------------ the agent --

    def _submitted(self, e: TasksSubmitted) -> None:
        """Queue new tasks (ids already known are ignored); the next Tick places them."""
        known, pending = self.known, self.pending
        for spec in e.tasks:
            if spec.task_id not in known:
                known.add(spec.task_id)
                pending.append(spec)

    def _cancel(self, e: CancelRequested) -> None:
        """Queued tasks end cancelled now; managers holding one are told."""
        wanted = set(e.task_ids) & self.known
        if not wanted:
            return
        kept: collections.deque[m.TaskSpec] = collections.deque()
        for spec in self.pending:
            if spec.task_id in wanted:
                self._finish(m.cancelled_result(spec))
            else:
                kept.append(spec)
        self.pending = kept
        for mgr in self.managers.values():
            ids = [t for t in mgr.tasks if t in wanted]
            if ids:
                self.cancelling.update(ids)
                self._send(mgr, m.Cancel(task_ids=ids), e.now)

    def _finish(self, result: m.TaskResult) -> None:
        self.known.discard(result.task_id)
        self.cancelling.discard(result.task_id)
        self.results.append(result)

    # ----------------------------------------------------------- managers --

    def _send(self, mgr: ManagerRecord, msg: m.Message, now: float) -> None:
        self._out.append(ToManager(mgr.manager_id, msg))
        mgr.last_sent = now
        self._by_sent.move_to_end(mgr.manager_id)

    def _update_ready(self, mgr: ManagerRecord) -> None:
        if mgr.free > 0 and not mgr.draining and mgr.manager_id in self.managers:
            self._ready[mgr.manager_id] = mgr
        else:
            self._ready.pop(mgr.manager_id, None)

    def _from_managers(self, e: FromManagers) -> None:
        now = e.now
        for manager_id, msg in e.messages:
            try:
                self._from_manager(manager_id, msg, now)
            except ProtocolError as exc:
                self._out.append(Log(logging.WARNING, f"dropped a bad message: {exc}"))
            except Exception as exc:  # a bug here must not end the endpoint
                self._out.append(Log(logging.ERROR, "error while handling a manager's "
                                                    "message; dropped it", exc))

    def _from_manager(self, manager_id: str, msg: m.Message, now: float) -> None:
        if type(msg) is m.ManagerRegister:
            self._register(manager_id, msg, now)
            return
        mgr = self.managers.get(manager_id)
        if mgr is None:  # unknown (e.g. declared lost): it must register again
            self._out.append(ToManager(manager_id, _UNKNOWN))
            return
        mgr.last_heard = now
        self._by_heard.move_to_end(manager_id)
        said = self._said.get(type(msg))
        if said is not None:  # (a Heartbeat says only that it lives)
            said(mgr, msg)

    def _register(self, manager_id: str, msg: m.ManagerRegister, now: float) -> None:
        if msg.manager_id != manager_id:
            raise ProtocolError("ManagerRegister names another id than its routing id")
        old = self.managers.get(manager_id)
        if old is not None:
            self._lose(old, "manager re-registered")
        fresh = ManagerRecord(manager_id, msg, next(self._seq), last_heard=now, last_sent=now)
        self.managers[manager_id] = fresh
        self._by_heard[manager_id] = fresh
        self._by_sent[manager_id] = fresh
        self._out.append(Log(logging.INFO, f"manager {manager_id} on {msg.hostname} "
                                           f"registered with {msg.workers} workers"))

    def _ready_msg(self, mgr: ManagerRecord, msg: m.Ready) -> None:
        mgr.free += msg.free
        self._update_ready(mgr)

    def _results(self, mgr: ManagerRecord, msg: m.Results) -> None:
        mgr.free += msg.free
        self._update_ready(mgr)
        tasks = mgr.tasks
        for r in msg.results:
            spec = tasks.pop(r.task_id, None)
            if spec is None:
                continue  # not this manager's (handed back, or it was lost meanwhile)
            if (not r.ok and r.error is not None and r.error.code in SYSTEM_FAILURES
                    and spec.attempt < self.max_retries
                    and spec.task_id not in self.cancelling):
                self._retry(spec, r.error.message)
            else:
                self._finish(r)

    def _states(self, mgr: ManagerRecord, msg: m.TaskStates) -> None:
        self.states.extend(s for s in msg.states if s.task_id in mgr.tasks)

    def _requeue(self, mgr: ManagerRecord, msg: m.Requeue) -> None:
        back = [mgr.tasks.pop(t) for t in msg.task_ids if t in mgr.tasks]
        for spec in reversed(back):  # to the head of the queue, in their order
            if spec.task_id in self.cancelling:
                self._finish(m.cancelled_result(spec))
            else:
                self.pending.appendleft(spec)

    def _drain(self, mgr: ManagerRecord, msg: m.Drain) -> None:
        mgr.draining = True
        self._update_ready(mgr)

    def _bye(self, mgr: ManagerRecord, msg: m.Bye) -> None:
        self._lose(mgr, f"manager stopped: {msg.reason}", code="pilot_ended")

    def _retry(self, spec: m.TaskSpec, why: str) -> None:
        self._out.append(Log(logging.WARNING, f"retrying task {spec.task_id} "
                                              f"(attempt {spec.attempt + 2}): {why}"))
        spec.attempt += 1
        self.pending.appendleft(spec)

    def _lose(self, mgr: ManagerRecord, why: str, code: str = "manager_lost") -> None:
        """A manager gone: what it held is cancelled (if asked), retried, or failed."""
        self.managers.pop(mgr.manager_id, None)
        self._ready.pop(mgr.manager_id, None)
        self._by_heard.pop(mgr.manager_id, None)
        self._by_sent.pop(mgr.manager_id, None)
        if mgr.tasks:
            self._out.append(Note(f"{why} with {len(mgr.tasks)} tasks"))
        for spec in mgr.tasks.values():
            if spec.task_id in self.cancelling:
                self._finish(m.cancelled_result(spec))
            elif spec.attempt < self.max_retries:
                self._retry(spec, why)
            else:
                self._finish(m.TaskResult(
                    task_id=spec.task_id, ok=False, attempts=spec.attempt + 1,
                    error=m.ErrorInfo(code=code, message=f"{why} (manager {mgr.manager_id} "
                                                         f"on {mgr.info.hostname})")))
        mgr.tasks.clear()

    # ---------------------------------------------------------------- turn --

    def _tick(self, e: Tick) -> None:
        """Place queued work, find managers that stopped beating, beat, report."""
        now = e.now
        self._dispatch(now)
        while self._by_heard:  # the least recently heard first: stop at one still alive
            mgr = next(iter(self._by_heard.values()))
            silent = now - mgr.last_heard
            if silent <= self.heartbeat_threshold_s:
                break
            self._out.append(Log(logging.ERROR, f"manager {mgr.manager_id} missed its "
                                                f"heartbeats"))
            self._lose(mgr, f"manager lost: no heartbeat for {silent:.0f}s")
        # A manager hears from us at least every period; work sent counts as a beat.
        beat: list[str] = []
        while self._by_sent:
            mgr = next(iter(self._by_sent.values()))
            if now - mgr.last_sent < self.heartbeat_period_s:
                break
            beat.append(mgr.manager_id)
            mgr.last_sent = now
            self._by_sent.move_to_end(mgr.manager_id)
        if beat:
            self._out.append(Beat(beat, e.wall))
        status = None
        if now - self._last_status >= STATUS_PERIOD_S:
            self._last_status = now
            status = self.status(now, e.wall, self.max_listed)
        if self.results or self.states or status is not None:
            self._out.append(Report(self.results, self.states, status))
            self.results, self.states = [], []

    def _dispatch(self, now: float) -> None:
        pending = self.pending
        if not pending or not self._ready:
            return
        # only managers with credit, in registration order (as a walk over all would)
        for mgr in sorted(self._ready.values(), key=_registration_order):
            if not pending:
                return
            batch: list[m.TaskSpec] = []
            skipped: list[m.TaskSpec] = []
            while pending and len(batch) < mgr.free:
                spec = pending.popleft()
                (batch if mgr.fits(spec) else skipped).append(spec)
            pending.extendleft(reversed(skipped))
            if batch:
                mgr.free -= len(batch)
                tasks = mgr.tasks
                for spec in batch:
                    tasks[spec.task_id] = spec
                self._send(mgr, m.Tasks(tasks=batch), now)
                self._update_ready(mgr)

    def _closing(self, e: Closing) -> None:
        for mid in self.managers:
            self._out.append(ToManager(mid, m.Shutdown(reason="endpoint stopping")))

    # ------------------------------------------------------------- queries --

    def status(self, now: float, wall: float, listed: int) -> m.EndpointStatus:
        """Totals and per-block load over every manager; the managers themselves only
        up to ``listed`` (with 8,000 the message would be ~1 MB a second)."""
        workers = running = 0
        load: dict[str, m.BlockLoad] = {}
        for mg in self.managers.values():
            busy = min(len(mg.tasks), mg.info.workers)
            workers += mg.info.workers
            running += len(mg.tasks)
            b = load.get(mg.info.block_id)
            if b is None:
                b = load[mg.info.block_id] = m.BlockLoad(block_id=mg.info.block_id)
            b.managers += 1
            b.workers += mg.info.workers
            b.busy += busy
        shown = itertools.islice(reversed(self._by_heard.values()), listed)
        return m.EndpointStatus(
            workers_total=workers, workers_busy=min(running, workers),
            tasks_queued=len(self.pending), tasks_running=running,
            managers=[m.ManagerInfo(
                manager_id=mg.manager_id, hostname=mg.info.hostname, block_id=mg.info.block_id,
                workers=mg.info.workers, busy=min(len(mg.tasks), mg.info.workers),
                cores=mg.info.cores, gpus=mg.info.gpus, draining=mg.draining,
                last_heartbeat=wall - (now - mg.last_heard))
                for mg in shown],
            managers_total=len(self.managers), block_load=list(load.values()))


def _registration_order(mgr: ManagerRecord) -> int:
    return mgr.seq
