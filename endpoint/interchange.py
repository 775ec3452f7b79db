"""The interchange: queues an endpoint's tasks and places them on managers.

Managers dial its ROUTER (tcp, reachable from compute nodes) and grant credits
with ``Ready(free)``; it sends each at most that many tasks, honouring per-task
resource hints (a task that asks for more cores or GPUs than a manager's node
has goes elsewhere). It retries tasks lost to system failures up to
``max_retries``, and declares a manager lost when its heartbeats stop.

It owns no thread: the agent's poll loop drives it (``on_readable`` when its
socket is readable, ``submit`` and ``cancel`` with what the service sent,
``turn`` once per loop turn) and takes what it has for the service with
``take``. Tasks, results and running states pass between the two as objects,
without an encoding or a thread hop in between.

A manager may also live in the agent's own loop (the ``inline`` provider): it is
attached with ``attach``, gets its messages handed to it as objects, and hands
its own to ``from_inline``; everything else about it (credits, retries,
heartbeats, status) is the same as for a manager on a compute node.

Nothing in a turn walks every manager: the managers with credit, the least
recently heard and the least recently sent to are kept apart (ordered dicts),
so a turn does not cost more with 8,000 managers than with 10
(benchmarks/bench_scale.py measures it)::

    agent --submit()--> pending ---dispatch--> ready managers (credit > 0)
          <--take()-- results, running states, status (1/s) <-- ROUTER tcp <-- managers
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from funcx_flows import messages as m
from funcx_flows.endpoint.linkauth import Gate
from funcx_flows.errors import ProtocolError

log = logging.getLogger(__name__)

SYSTEM_FAILURES = frozenset({"worker_lost", "manager_lost", "pilot_ended"})
STATUS_PERIOD_S = 1.0
MAX_LISTED_MANAGERS = 100  # in the status; totals and per-block load cover all


@dataclass
class ManagerState:
    manager_id: str
    info: m.ManagerRegister
    seq: int = 0  # registration order: work goes to the earliest registered first
    free: int = 0
    tasks: dict[str, m.TaskSpec] = field(default_factory=dict)
    last_heard: float = field(default_factory=time.monotonic)
    last_sent: float = field(default_factory=time.monotonic)
    draining: bool = False

    def fits(self, spec: m.TaskSpec) -> bool:
        r = spec.resources
        if r is None:
            return True
        return r.cores <= max(self.info.cores, 1) and r.gpus <= self.info.gpus


class Interchange:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], bind_host: str,
                 *, max_retries: int = 0, heartbeat_period_s: float = 2.0,
                 heartbeat_threshold_s: float = 10.0, port: int = 0,
                 gate: Gate | None = None) -> None:
        """``gate``: who may connect (see linkauth); its ZAP socket is the owner's to
        poll (``gate.sock``, answered by ``gate.answer``). None: anyone (tests and
        the simulated managers of the scale benchmark)."""
        self.max_retries = max_retries
        self.heartbeat_period_s = heartbeat_period_s
        self.heartbeat_threshold_s = heartbeat_threshold_s
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.sndhwm = 0
        self.sock.rcvhwm = 0
        self.sock.router_handover = True
        self.gate = gate
        if gate is not None:
            gate.guard(ctx, self.sock)
        if port:
            self.sock.bind(f"tcp://{bind_host}:{port}")
            self.port = port
        else:
            self.port = self.sock.bind_to_random_port(f"tcp://{bind_host}")
        self.pending: collections.deque[m.TaskSpec] = collections.deque()
        self.known: set[str] = set()  # task ids queued or on a manager
        # cancelled while on a manager, whose answer has not come: if the manager hands
        # them back (Requeue) or is lost, they end as cancelled, not queued again
        self.cancelling: set[str] = set()
        self.managers: dict[str, ManagerState] = {}
        # The same managers, ordered for the loop's questions (see the module docstring).
        self._ready: dict[str, ManagerState] = {}  # free > 0 and not draining
        self._by_heard: collections.OrderedDict[str, ManagerState] = collections.OrderedDict()
        self._by_sent: collections.OrderedDict[str, ManagerState] = collections.OrderedDict()
        self._seq = itertools.count()
        self.results: list[m.TaskResult] = []
        self.states: list[m.TaskState] = []
        self.new_status: m.EndpointStatus | None = None
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self._from_manager = m.Decoder(m.MANAGER_TO_INTERCHANGE)
        self._to_manager = m.Decoder(m.INTERCHANGE_TO_MANAGER)  # a beat encoded once for all
        # managers in the agent's own loop: id -> the call that hands them a message
        self._inline: dict[str, Callable[[m.Message], None]] = {}
        self._inline_in: collections.deque[tuple[str, m.Message]] = collections.deque()
        self._last_status = 0.0
        # how long the owner's poll may wait between turns
        self.poll_ms = int(min(heartbeat_period_s, STATUS_PERIOD_S) * 1000 / 2)

    # ------------------------------------------------------------ the owner --

    def submit(self, specs: list[m.TaskSpec]) -> None:
        """Queue new tasks (ids already known are ignored); the next ``turn`` places them."""
        for spec in specs:
            if spec.task_id not in self.known:
                self.known.add(spec.task_id)
                self.pending.append(spec)

    def on_readable(self) -> None:
        """Handle what managers sent (up to 1000 frames a call)."""
        for _ in range(1000):
            try:
                ident, frame = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            self._safely(self._on_manager, ident, frame)

    def attach(self, manager_id: str, deliver: Callable[[m.Message], None]) -> None:
        """A manager in the agent's loop: ``deliver`` hands it what would go over the
        socket (it must not call back into the interchange; see ``from_inline``)."""
        self._inline[manager_id] = deliver

    def detach(self, manager_id: str) -> None:
        self._inline.pop(manager_id, None)

    def from_inline(self, manager_id: str, msg: m.Message) -> None:
        """A message from a manager in the agent's loop, handled at the next
        ``on_inline`` (never inside the call that produced it)."""
        self._inline_in.append((manager_id, msg))

    @property
    def inline_waiting(self) -> bool:
        """Messages from managers in the agent's loop not yet handled."""
        return bool(self._inline_in)

    def on_inline(self) -> None:
        """Handle what managers in the agent's loop said since the last call."""
        while self._inline_in:
            self._safely(self._on_manager_msg, *self._inline_in.popleft())

    @staticmethod
    def _safely(handle: Callable[..., None], *args: Any) -> None:
        """One manager's message handled; a bad or mishandled one is dropped and
        logged, never the end of the endpoint."""
        try:
            handle(*args)
        except ProtocolError as exc:
            log.warning("dropped a bad message: %s", exc)
        except Exception:
            log.exception("error while handling a manager's message; dropped it")

    def turn(self) -> None:
        """Place queued work, beat, and find managers that stopped beating."""
        self.on_inline()
        self._dispatch()
        self._periodic()

    def take(self) -> tuple[list[m.TaskResult], list[m.TaskState], m.EndpointStatus | None]:
        """What the service should hear: finished tasks, running states, and the
        status when one is due."""
        out = self.results, self.states, self.new_status
        self.results, self.states, self.new_status = [], [], None
        return out

    def close(self) -> None:
        for mid in list(self.managers):
            self._send_manager(mid, m.Shutdown(reason="endpoint stopping"))
        self.sock.close(linger=500)
        if self.gate is not None:
            self.gate.close()

    def cancel(self, task_ids: list[str]) -> None:
        """Queued tasks end cancelled now; managers holding one are told."""
        wanted = set(task_ids) & self.known
        if not wanted:
            return
        kept: collections.deque[m.TaskSpec] = collections.deque()
        for spec in self.pending:
            if spec.task_id in wanted:
                self._finish_cancelled(spec)
            else:
                kept.append(spec)
        self.pending = kept
        for mgr in self.managers.values():
            ids = [t for t in mgr.tasks if t in wanted]
            if ids:
                self.cancelling.update(ids)
                self._send_manager(mgr.manager_id, m.Cancel(task_ids=ids))

    def _finish(self, result: m.TaskResult) -> None:
        self.known.discard(result.task_id)
        self.cancelling.discard(result.task_id)
        self.results.append(result)

    def _finish_cancelled(self, spec: m.TaskSpec) -> None:
        self._finish(m.TaskResult(
            task_id=spec.task_id, ok=False, attempts=spec.attempt,
            error=m.ErrorInfo(code="cancelled", message="cancelled by the user")))

    # ----------------------------------------------------------- managers --

    def _send_manager(self, manager_id: str, msg: m.Message | bytes) -> None:
        deliver = self._inline.get(manager_id)
        if deliver is not None:
            deliver(self._to_manager.decode(msg) if isinstance(msg, bytes) else msg)
        else:
            frame = msg if isinstance(msg, bytes) else m.encode(msg)
            self.sock.send_multipart([manager_id.encode(), frame], copy=False)
        mgr = self._by_sent.get(manager_id)
        if mgr is not None:
            mgr.last_sent = time.monotonic()
            self._by_sent.move_to_end(manager_id)

    def _update_ready(self, mgr: ManagerState) -> None:
        if mgr.free > 0 and not mgr.draining and mgr.manager_id in self.managers:
            self._ready[mgr.manager_id] = mgr
        else:
            self._ready.pop(mgr.manager_id, None)

    def _on_manager(self, ident: bytes, frame: bytes) -> None:
        manager_id = ident.decode("ascii", "replace")
        if manager_id in self._inline:
            raise ProtocolError(f"a peer on the socket claimed in-process manager {manager_id}")
        self._on_manager_msg(manager_id, self._from_manager.decode(frame))

    def _on_manager_msg(self, manager_id: str, msg: m.Message) -> None:
        if isinstance(msg, m.ManagerRegister):
            if msg.manager_id != manager_id:
                raise ProtocolError("ManagerRegister names another id than its routing id")
            old = self.managers.get(manager_id)
            if old is not None:
                self._lose(old, "manager re-registered")
            fresh = ManagerState(manager_id, msg, seq=next(self._seq))
            self.managers[manager_id] = fresh
            self._by_heard[manager_id] = fresh
            self._by_sent[manager_id] = fresh
            log.info("manager %s on %s registered with %d workers", manager_id, msg.hostname,
                     msg.workers)
            return
        mgr = self.managers.get(manager_id)
        if mgr is None:
            # unknown (e.g. declared lost): it must register again
            self._send_manager(manager_id, m.Shutdown(reason="unknown manager"))
            return
        mgr.last_heard = time.monotonic()
        self._by_heard.move_to_end(manager_id)
        if isinstance(msg, m.Ready):
            mgr.free += msg.free
            self._update_ready(mgr)
        elif isinstance(msg, m.Results):
            mgr.free += msg.free
            self._update_ready(mgr)
            for r in msg.results:
                spec = mgr.tasks.pop(r.task_id, None)
                if spec is None:
                    continue
                if (not r.ok and r.error is not None and r.error.code in SYSTEM_FAILURES
                        and spec.attempt < self.max_retries
                        and spec.task_id not in self.cancelling):
                    self._retry(spec, r.error.message)
                else:
                    self._finish(r)
        elif isinstance(msg, m.TaskStates):
            self.states.extend(s for s in msg.states if s.task_id in mgr.tasks)
        elif isinstance(msg, m.Requeue):
            back = [mgr.tasks.pop(t) for t in msg.task_ids if t in mgr.tasks]
            for spec in reversed(back):  # to the head of the queue, in their order
                if spec.task_id in self.cancelling:
                    self._finish_cancelled(spec)
                else:
                    self.pending.appendleft(spec)
        elif isinstance(msg, m.Drain):
            mgr.draining = True
            self._update_ready(mgr)
        elif isinstance(msg, m.Bye):
            self._lose(mgr, f"manager stopped: {msg.reason}", code="pilot_ended")

    def _retry(self, spec: m.TaskSpec, why: str) -> None:
        log.warning("retrying task %s (attempt %d): %s", spec.task_id, spec.attempt + 2, why)
        spec.attempt += 1
        self.pending.appendleft(spec)

    def _lose(self, mgr: ManagerState, why: str, code: str = "manager_lost") -> None:
        self.managers.pop(mgr.manager_id, None)
        self._ready.pop(mgr.manager_id, None)
        self._by_heard.pop(mgr.manager_id, None)
        self._by_sent.pop(mgr.manager_id, None)
        if mgr.tasks:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {why} with {len(mgr.tasks)} tasks")
        for spec in mgr.tasks.values():
            if spec.task_id in self.cancelling:
                self._finish_cancelled(spec)
            elif spec.attempt < self.max_retries:
                self._retry(spec, why)
            else:
                self._finish(m.TaskResult(
                    task_id=spec.task_id, ok=False, attempts=spec.attempt + 1,
                    error=m.ErrorInfo(code=code, message=f"{why} (manager {mgr.manager_id} "
                                                         f"on {mgr.info.hostname})")))
        mgr.tasks.clear()

    def _dispatch(self) -> None:
        if not self.pending or not self._ready:
            return
        # only managers with credit, in registration order (as a walk over all would)
        for mgr in sorted(self._ready.values(), key=_registration_order):
            if not self.pending:
                return
            batch: list[m.TaskSpec] = []
            skipped: list[m.TaskSpec] = []
            while self.pending and len(batch) < mgr.free:
                spec = self.pending.popleft()
                (batch if mgr.fits(spec) else skipped).append(spec)
            self.pending.extendleft(reversed(skipped))
            if batch:
                mgr.free -= len(batch)
                for spec in batch:
                    mgr.tasks[spec.task_id] = spec
                self._send_manager(mgr.manager_id, m.Tasks(tasks=batch))
                self._update_ready(mgr)

    # ---------------------------------------------------------------- loop --

    def status(self) -> m.EndpointStatus:
        """Totals and per-block load over every manager; the managers themselves only
        up to MAX_LISTED_MANAGERS (with 8,000 the message would be ~1 MB a second)."""
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
        listed = list(itertools.islice(reversed(self._by_heard.values()), MAX_LISTED_MANAGERS))
        return m.EndpointStatus(
            workers_total=workers, workers_busy=min(running, workers),
            tasks_queued=len(self.pending), tasks_running=running,
            managers=[m.ManagerInfo(
                manager_id=mg.manager_id, hostname=mg.info.hostname, block_id=mg.info.block_id,
                workers=mg.info.workers, busy=min(len(mg.tasks), mg.info.workers),
                cores=mg.info.cores, gpus=mg.info.gpus, draining=mg.draining,
                last_heartbeat=time.time() - (time.monotonic() - mg.last_heard))
                for mg in listed],
            managers_total=len(self.managers), block_load=list(load.values()),
            recent_errors=list(self.errors))

    def _periodic(self) -> None:
        now = time.monotonic()
        while self._by_heard:  # the least recently heard first: stop at one still alive
            mgr = next(iter(self._by_heard.values()))
            if now - mgr.last_heard <= self.heartbeat_threshold_s:
                break
            log.error("manager %s missed its heartbeats", mgr.manager_id)
            self._lose(mgr, f"manager lost: no heartbeat for "
                            f"{now - mgr.last_heard:.0f}s")
        # A manager hears from us at least every period; work sent counts as a beat.
        beat = b""
        while self._by_sent:
            mgr = next(iter(self._by_sent.values()))
            if now - mgr.last_sent < self.heartbeat_period_s:
                break
            beat = beat or m.encode(m.Heartbeat(sent_at=time.time()))
            self._send_manager(mgr.manager_id, beat)
        if now - self._last_status >= STATUS_PERIOD_S:
            self._last_status = now
            self.new_status = self.status()


def _registration_order(mgr: ManagerState) -> int:
    return mgr.seq
