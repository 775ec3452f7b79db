"""The interchange: queues an endpoint's tasks and places them on managers.

This is the interchange's shell: the ROUTER socket, the managers in the agent's
own loop, the clock and the log. What it decides (placement by credit and
resources, retries, lost managers, hand-backs, cancels that race results,
heartbeats, the status) is ``InterchangeState`` (interchange_state.py), a pure
state machine: the shell turns what happens into its events and carries out
the instructions it answers with::

    agent --submit()/cancel()--> TasksSubmitted, CancelRequested --+
    managers --ROUTER tcp, or from_inline()--> FromManagers -------+--> InterchangeState
    agent --turn()--> Tick (place, find silent managers, beat) ----+          |
                                                                              | instructions
    managers <--ROUTER tcp, or deliver()-- ToManager (Tasks/Cancel/Shutdown), Beat
    agent <--take()-- Report: results, running states, status (1/s);  Log, Note: log, recent errors

Managers dial the ROUTER (tcp, reachable from compute nodes) and grant credits
with ``Ready(free)``; it sends each at most that many tasks, honouring per-task
resource hints. It owns no thread: the agent's poll loop drives it
(``on_readable`` when its socket is readable, ``submit`` and ``cancel`` with what
the service sent, ``turn`` once per loop turn) and takes what it has for the
service with ``take``. Tasks, results and running states pass between the two
as objects, without an encoding or a thread hop in between.

A manager may also live in the agent's own loop (the ``inline`` provider): it is
attached with ``attach``, gets its messages handed to it as objects, and hands
its own to ``from_inline``; to the state it is a manager like any other.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from funcx_flows import messages as m
from funcx_flows.endpoint.interchange_state import (
    MAX_LISTED_MANAGERS,
    STATUS_PERIOD_S,
    Beat,
    CancelRequested,
    Closing,
    Event,
    FromManagers,
    InterchangeState,
    Log,
    ManagerRecord,
    Note,
    Report,
    TasksSubmitted,
    Tick,
    ToManager,
)
from funcx_flows.endpoint.linkauth import Gate
from funcx_flows.errors import ProtocolError

log = logging.getLogger(__name__)


class Interchange:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], bind_host: str,
                 *, max_retries: int = 0, heartbeat_period_s: float = 2.0,
                 heartbeat_threshold_s: float = 10.0, port: int = 0,
                 gate: Gate | None = None) -> None:
        """``gate``: who may connect (see linkauth); its ZAP socket is the owner's to
        poll (``gate.sock``, answered by ``gate.answer``). None: anyone (tests and
        the simulated managers of the scale benchmark)."""
        self.state = InterchangeState(max_retries=max_retries,
                                      heartbeat_period_s=heartbeat_period_s,
                                      heartbeat_threshold_s=heartbeat_threshold_s)
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
        self.results: list[m.TaskResult] = []
        self.states: list[m.TaskState] = []
        self.new_status: m.EndpointStatus | None = None
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self._from_manager = m.Decoder(m.MANAGER_TO_INTERCHANGE)
        # managers in the agent's own loop: id -> the call that hands them a message
        self._inline: dict[str, Callable[[m.Message], None]] = {}
        self._inline_in: collections.deque[tuple[str, m.Message]] = collections.deque()
        self._do: dict[type[Any], Callable[[Any], None]] = {
            ToManager: self._to_manager, Beat: self._beat, Report: self._report,
            Log: lambda ins: log.log(ins.level, "%s", ins.text, exc_info=ins.exc),
            Note: lambda ins: self.errors.append(f"{time.strftime('%H:%M:%S')} {ins.text}")}
        # how long the owner's poll may wait between turns
        self.poll_ms = int(min(heartbeat_period_s, STATUS_PERIOD_S) * 1000 / 2)

    # The state's books, read by tests and benchmarks.
    @property
    def managers(self) -> dict[str, ManagerRecord]:
        managers: dict[str, ManagerRecord] = self.state.managers
        return managers

    @property
    def pending(self) -> Sequence[m.TaskSpec]:
        pending: Sequence[m.TaskSpec] = self.state.pending
        return pending

    @property
    def known(self) -> set[str]:
        known: set[str] = self.state.known
        return known

    @property
    def cancelling(self) -> set[str]:
        cancelling: set[str] = self.state.cancelling
        return cancelling

    # ------------------------------------------------------------ the owner --

    def _run(self, event: Event) -> None:
        """Hand the state an event and carry out what it answers, in order."""
        instructions = self.state.handle(event)
        if instructions:
            do = self._do
            for ins in instructions:
                do[type(ins)](ins)

    def submit(self, specs: list[m.TaskSpec]) -> None:
        """Queue new tasks (ids already known are ignored); the next ``turn`` places them."""
        self._run(TasksSubmitted(specs))

    def cancel(self, task_ids: list[str]) -> None:
        """Queued tasks end cancelled (reported at the next ``turn``); managers
        holding one are told."""
        self._run(CancelRequested(task_ids, time.monotonic()))

    def on_readable(self) -> None:
        """Handle what managers sent (up to 1000 frames a call, as one event)."""
        batch: list[tuple[str, m.Message]] = []
        recv, decode, inline = self.sock.recv_multipart, self._from_manager.decode, self._inline
        for _ in range(1000):
            try:
                ident, frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                continue
            manager_id = ident.decode("ascii", "replace")
            try:
                if manager_id in inline:
                    raise ProtocolError(
                        f"a peer on the socket claimed in-process manager {manager_id}")
                batch.append((manager_id, decode(frame)))
            except ProtocolError as exc:
                log.warning("dropped a bad message: %s", exc)
        if batch:
            self._run(FromManagers(batch, time.monotonic()))

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
        if self._inline_in:
            batch = list(self._inline_in)
            self._inline_in.clear()
            self._run(FromManagers(batch, time.monotonic()))

    def turn(self) -> None:
        """Place queued work, beat, and find managers that stopped beating."""
        self.on_inline()
        self._run(Tick(time.monotonic(), time.time()))

    def take(self) -> tuple[list[m.TaskResult], list[m.TaskState], m.EndpointStatus | None]:
        """What the service should hear: finished tasks, running states, and the
        status when one is due."""
        out = self.results, self.states, self.new_status
        self.results, self.states, self.new_status = [], [], None
        return out

    def status(self) -> m.EndpointStatus:
        """The status as of now (the turn makes one a second for ``take``)."""
        status: m.EndpointStatus = self.state.status(time.monotonic(), time.time(),
                                                     MAX_LISTED_MANAGERS)
        status.recent_errors = list(self.errors)
        return status

    def close(self) -> None:
        self._run(Closing())
        self.sock.close(linger=500)
        if self.gate is not None:
            self.gate.close()

    # ---------------------------------------------------- carrying it out --

    def _to_manager(self, ins: ToManager) -> None:
        deliver = self._inline.get(ins.manager_id)
        if deliver is not None:
            deliver(ins.msg)
        else:
            self.sock.send_multipart([ins.manager_id.encode(), m.encode(ins.msg)], copy=False)

    def _beat(self, ins: Beat) -> None:
        beat = m.Heartbeat(sent_at=ins.sent_at)
        frame = m.encode(beat)  # encoded once for all
        for manager_id in ins.manager_ids:
            deliver = self._inline.get(manager_id)
            if deliver is not None:
                deliver(beat)
            else:
                self.sock.send_multipart([manager_id.encode(), frame], copy=False)

    def _report(self, ins: Report) -> None:
        # (the state's lists are handed over, not copied: it starts new ones)
        if ins.results:
            if self.results:
                self.results += ins.results
            else:
                self.results = ins.results
        if ins.states:
            if self.states:
                self.states += ins.states
            else:
                self.states = ins.states
        if ins.status is not None:
            ins.status.recent_errors = list(self.errors)
            self.new_status = ins.status
