"""The agent: an endpoint's link to the service, and the loop that drives the rest.

One thread, one poll loop over the service link's socket, the interchange's
ROUTER to the managers, and the managers' ZAP gate (the loop drives the
interchange; tasks and results pass to and fro as objects). What it does with
them is in modules of their own, each with one owner::

    service                agent loop (one thread)                        interchange.py (shell)
    -------                -----------------------                        + interchange_state.py
    link.py: ZeroMQ | WebSocket
      Tasks, Cancel -----> held tasks (duplicates, allow-list) --submit--> queue --> managers
                                                               --cancel--> (ROUTER, or inline
      ResultsAck --------> outbox.py: the spool forgets them                in this loop)
      Welcome -----------> outbox.py: resend all it spooled                   |
      Results <----------- outbox.py: hold, send, spool  <---- results -------+ take()
      TaskStates <-------------------------------------------- running states +
      EndpointStatus <---- status.py: one builder (and     <-- load, 1/s -----+
      Hello, Heartbeat       status.json)  ^ ScalerReport, notes
                                           |      | LoopSnapshot (held, load, result limit)
                                           |      v
                           scaler thread (scaler.py): provider poll/submit/cancel, blocks

The loop alone touches the link, the interchange, the outbox and the held
tasks; the scaler thread alone touches the provider's blocks (a scheduler's
commands can take seconds and must not hold up tasks). They exchange frozen
snapshots and a queue of notes, never shared attributes. After a lost link the
agent reconnects with the shared retry policy and says Hello again with the
tasks it holds; the outbox resends every result not yet acknowledged.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from funcx_flows import messages as m
from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.container import image_refusal
from funcx_flows.endpoint.interchange import Interchange
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.link import (
    LinkDown,
    ServiceLink,
    WsServiceLink,
    WsTarget,
    ZmqServiceLink,
    ZmqTarget,
    link_url,
)
from funcx_flows.endpoint.linkauth import Gate, Mechanism
from funcx_flows.endpoint.mpi import refusal as mpi_refusal
from funcx_flows.endpoint.outbox import Outbox
from funcx_flows.endpoint.plan import launch_plan
from funcx_flows.endpoint.providers.base import Provider
from funcx_flows.endpoint.providers.inline import InlineManagers, InlineProvider
from funcx_flows.endpoint.registration import Registration, link_transport
from funcx_flows.endpoint.scaler import BlockLoadView, BlockScaler, LoopSnapshot
from funcx_flows.endpoint.spool import Spool
from funcx_flows.endpoint.status import StatusBuilder
from funcx_flows.endpoint.strategy import Actions, Inputs, decide
from funcx_flows.errors import CommandError, ContainerError, ProtocolError
from funcx_flows.memory import release_free_memory
from funcx_flows.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

AGENT_VERSION = "1"
TRIM_PERIOD_S = 30.0  # at most this often, when idle, freed heap goes back to the OS
# A burst from the service (a backlog: hundreds of 512-task batches) is taken in bites
# between dispatches, so managers get work while the rest is still decoded.
SERVICE_FRAMES_PER_TURN = 16
MANAGER_CREDENTIALS = "manager-credentials.json"  # in the endpoint's folder (see linkauth)


def open_link(ctx: zmq.Context[zmq.Socket[bytes]], transport: str,
              reg: Registration) -> ServiceLink:
    """A new link to the service over ``transport`` (see ``link_transport``)."""
    if transport == "websocket":
        return WsServiceLink(ctx, WsTarget(link_url(reg.service_url, reg.endpoint_id),
                                           reg.link_token))
    return ZmqServiceLink(ctx, ZmqTarget(reg.zmq_url, reg.endpoint_id, reg.public_key,
                                         reg.secret_key, reg.service_public_key))


class Agent:
    def __init__(self, config: EndpointConfig, folder: Path, reg: Registration,
                 provider: Provider, *, max_result_bytes: int = 10 * 1024 * 1024) -> None:
        self.config = config
        self.folder = folder
        self.reg = reg
        self.provider = provider
        self.max_result_bytes = max_result_bytes
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.spool = Spool(folder / "spool.db")
        self.held: set[str] = set()  # tasks taken from the service and not yet answered
        self.last_spool_retry = 0.0
        self.last_trim = time.monotonic()
        self.stopping = False
        self.link_up = False
        self.link: ServiceLink | None = None
        self.transport = link_transport(config, reg)
        self.last_heard = time.monotonic()
        self.last_sent = 0.0
        self.reconnect_at = 0.0
        self.heartbeat_period_s = config.heartbeat_period_s
        self.heartbeat_threshold_s = config.heartbeat_threshold_s
        self.backoff = Backoff(RetryPolicy(initial=0.2, max_delay=30.0))
        self.status = m.EndpointStatus()  # the latest, as sent to the service
        self._block_load: tuple[BlockLoadView, ...] = ()  # the status's, for the scaler
        self._from_service = m.Decoder(m.SERVICE_TO_AGENT)
        # absolute: a pilot job runs its managers in another working directory
        self.credentials_path = (folder / MANAGER_CREDENTIALS).resolve()
        # the sandbox, the container engine, task folders: checked before anything
        # is bound or started (plan.py)
        plan = launch_plan(config, folder, self.credentials_path)
        # only the managers this run starts may connect (see linkauth)
        self.gate = Gate(manager_auth(config))
        self.gate.credentials.save(self.credentials_path)
        self.interchange = Interchange(
            self.ctx, _bind_host(config.interchange_address),
            max_retries=config.max_retries_on_system_failure,
            heartbeat_period_s=config.heartbeat_period_s,
            heartbeat_threshold_s=config.heartbeat_threshold_s, gate=self.gate)
        # the interchange's recent errors are the endpoint's (the loop alone adds to them)
        self.outbox = Outbox(self.spool, self._send_results, time.monotonic,
                             self.interchange.errors.append)
        self.launch = dataclasses.replace(  # now that the interchange has its port
            plan, interchange=f"tcp://{config.interchange_address}:{self.interchange.port}")
        self.scaler = BlockScaler(provider, config, self.launch)
        self.status_builder = StatusBuilder(reg.endpoint_id, folder)
        # blocks whose manager runs in this loop (the inline provider), else None
        self.inline = (InlineManagers(provider, self.interchange, self.manager_options)
                       if isinstance(provider, InlineProvider) else None)

    # ------------------------------------------------------------- service --

    def _connect(self) -> None:
        if self.link is not None:
            self.link.close()
        self.link = open_link(self.ctx, self.transport, self.reg)
        self.link_up = False
        self.last_heard = time.monotonic()
        held = sorted(self.held | self.spool.task_ids)
        self._send(m.Hello(endpoint_id=self.reg.endpoint_id, agent_version=AGENT_VERSION,
                           python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
                           hostname=socket.gethostname(), held_task_ids=held))

    def _send(self, msg: m.Message) -> None:
        if self.link is None:
            return
        self.link.send(m.encode(msg))
        self.last_sent = time.monotonic()

    def _send_results(self, results: list[m.TaskResult]) -> None:
        self._send(m.Results(results=results))

    def _link_lost(self, why: str) -> None:
        delay = self.backoff.failed()
        log.warning("link to the service lost (%s); reconnecting in %.1fs", why, delay)
        self.link_up = False
        if self.link is not None:
            self.link.close()
            self.link = None
        self.reconnect_at = time.monotonic() + delay

    def _on_service(self, frame: bytes) -> None:
        self.last_heard = time.monotonic()
        msg = self._from_service.decode(frame)
        if isinstance(msg, m.Welcome):
            self.link_up = True
            self.backoff.succeeded()
            self.heartbeat_period_s = min(self.config.heartbeat_period_s, msg.heartbeat_period_s)
            self.heartbeat_threshold_s = max(self.config.heartbeat_threshold_s,
                                             msg.heartbeat_threshold_s)
            # the service's limit: managers started from now on apply it in their
            # workers; results of earlier ones are held to it here
            self.max_result_bytes = msg.max_result_bytes
            self._post_snapshot()
            log.info("connected to the service (%d results to resend)",
                     self.outbox.unacknowledged)
            self.outbox.resend_all()
        elif isinstance(msg, m.Tasks):
            self._on_tasks(msg.tasks)
        elif isinstance(msg, m.Cancel):
            self.interchange.cancel(msg.task_ids)
        elif isinstance(msg, m.ResultsAck):
            self.outbox.acked(msg.task_ids)
        elif isinstance(msg, m.Bye):
            self._link_lost(f"the service said goodbye: {msg.reason}")

    def _refusal(self, resources: m.ResourceSpec) -> m.ErrorInfo | None:
        """Why a task's resources cannot be had here (MPI nodes, a container image)."""
        c = self.config
        why = mpi_refusal(resources, c.mpi is not None, c.nodes_per_block,
                          c.mpi.slots_per_node if c.mpi else None)
        if why:
            return m.ErrorInfo(code=CommandError.code, message=why)
        why = image_refusal(resources, self.launch.container)
        return m.ErrorInfo(code=ContainerError.code, message=why) if why else None

    def _on_tasks(self, specs: list[m.TaskSpec]) -> None:
        allowed = set(self.config.allowed_functions)
        fresh: list[m.TaskSpec] = []
        refused: list[m.TaskResult] = []
        for spec in specs:
            if spec.task_id in self.held or spec.task_id in self.spool:
                continue  # a duplicate delivery
            if allowed and spec.function_id not in allowed:
                refused.append(m.TaskResult(task_id=spec.task_id, ok=False, error=m.ErrorInfo(
                    code="function_not_allowed",
                    message=f"endpoint does not allow function {spec.function_id}")))
                continue
            why = None if spec.resources is None else self._refusal(spec.resources)
            if why is not None:  # it would wait for ever, or fail on a node
                refused.append(m.TaskResult(task_id=spec.task_id, ok=False, error=why))
                continue
            self.held.add(spec.task_id)
            fresh.append(spec)
        if fresh:
            self.interchange.submit(fresh)
            self._post_snapshot()
        if refused:
            self.outbox.add(refused, self.max_result_bytes)
            self._flush_results(force=True)

    # --------------------------------------------------------- interchange --

    def _from_interchange(self) -> None:
        results, states, status = self.interchange.take()
        if results:
            self.outbox.add(results, self.max_result_bytes)
        if states and self.link_up:
            self._send(m.TaskStates(states=states))
        if status is not None:
            self._take_notes()
            self.status = self.status_builder.build(status, self.scaler.report,
                                                    self.interchange.errors)
            self._block_load = LoopSnapshot.load_of(self.status)
            self._post_snapshot()
            if self.link_up:
                self._send(self.status)
            self._write_status()

    def _flush_results(self, force: bool = False) -> None:
        """Results leave through the outbox; the tasks they answer are no longer held."""
        if not self.outbox.waiting:  # most turns: checked before the call's arguments
            return
        done = self.outbox.flush(held=len(self.held), workers=self.status.workers_total,
                                 link_up=self.link_up, force=force)
        if done:
            self.held.difference_update(r.task_id for r in done)
            self._post_snapshot()

    def _post_snapshot(self) -> None:
        """What the scaler decides by, as of now (see scaler.py)."""
        s = self.status
        self.scaler.post(LoopSnapshot(
            tasks_held=len(self.held), tasks_queued=s.tasks_queued,
            tasks_running=s.tasks_running, block_load=self._block_load,
            max_result_bytes=self.max_result_bytes))

    def _write_status(self) -> None:
        self.status_builder.write(self.status, link_up=self.link_up,
                                  results_spooled=len(self.spool),
                                  spool_error=self.outbox.spool_error)

    def manager_options(self, block_id: str) -> ManagerOptions:
        """An inline block's manager (the scaler makes the others' from its snapshot)."""
        return self.launch.options(block_id, self.max_result_bytes, time.time())

    def _take_notes(self) -> None:
        """The scaler's notes join the endpoint's recent errors (when a status is
        made: no cost on the other turns)."""
        notes = self.scaler.notes
        while not notes.empty():
            self.interchange.errors.append(notes.get_nowait())

    # ----------------------------------------------------------------- run --

    def run(self, decide: Callable[[Inputs], Actions] = decide) -> None:
        """Until ``stopping``; ``decide``: the scaling strategy (tests pass one that
        does nothing)."""
        self._post_snapshot()
        self.scaler.decide = decide
        self.scaler.start()
        self._connect()
        ix = self.interchange
        inline = self.inline
        outbox = self.outbox
        poller = zmq.Poller()
        poller.register(ix.sock, zmq.POLLIN)
        zap = self.gate.sock
        poller.register(zap, zmq.POLLIN)
        timeout = min(200, ix.poll_ms)
        try:
            while not self.stopping:
                if self.link is None and time.monotonic() >= self.reconnect_at:
                    self._connect()
                link = self.link
                sock = None if link is None else link.sock
                if sock is not None:
                    poller.register(sock, zmq.POLLIN)
                if inline is not None:
                    inline.sync()
                    inline.update_poller(poller)
                wait = outbox.wait_ms(timeout)
                events = dict(poller.poll(wait if inline is None else inline.poll_ms(wait)))
                if sock is not None:
                    poller.unregister(sock)
                if link is not None and sock in events:
                    self._drain(link)
                if zap in events:
                    self.gate.answer()
                if ix.sock in events:
                    ix.on_readable()
                if inline is not None:
                    inline.on_events(events)
                ix.turn()
                if inline is not None:
                    inline.feed()
                self._from_interchange()
                self._flush_results()
                self._periodic()
        finally:
            self._shutdown()

    def _drain(self, link: ServiceLink) -> None:
        """Handle what the service sent, at most SERVICE_FRAMES_PER_TURN frames."""
        for _ in range(SERVICE_FRAMES_PER_TURN):
            if self.link is None or self.link is not link:  # a handler dropped the link
                return
            try:
                frame = link.recv()
            except LinkDown as exc:
                self._link_lost(str(exc))
                return
            if frame is None:
                return
            try:
                self._on_service(frame)
            except ProtocolError as exc:
                log.warning("dropped a bad message: %s", exc)
            except (zmq.ZMQError, sqlite3.Error):
                raise
            except Exception:  # a well-formed message we mishandle must not end the endpoint
                log.exception("error while handling a message; dropped it")

    def _periodic(self) -> None:
        now = time.monotonic()
        if self.link is not None:
            if now - self.last_heard > self.heartbeat_threshold_s:
                self._link_lost(f"no word from the service for {now - self.last_heard:.0f}s")
            elif now - self.last_sent >= self.heartbeat_period_s:
                self._send(m.Heartbeat(sent_at=time.time()))
        if now - self.last_spool_retry >= 1.0:
            self.last_spool_retry = now
            self.outbox.tick(self.link_up)
        if not self.held and now - self.last_trim >= TRIM_PERIOD_S:
            self.last_trim = now  # idle: what a burst freed goes back to the OS
            release_free_memory()

    def _shutdown(self) -> None:
        log.info("stopping")
        try:
            self._flush_results(force=True)  # none kept waiting (see outbox.flush)
            if self.link_up:
                self._send(m.Bye(reason="endpoint stopping"))
            self.interchange.close()
            if self.inline is not None:
                self.inline.close()
            self.scaler.stop()
        finally:
            self.provider.close()
            if self.link is not None:
                self.link.close(linger=500)
            self.spool.close()
            self.ctx.term()
            self.credentials_path.unlink(missing_ok=True)


def _bind_host(address: str) -> str:
    return "127.0.0.1" if address in ("127.0.0.1", "localhost") else "*"


def manager_auth(config: EndpointConfig) -> Mechanism:
    """``auto``: a password on the loopback interface (only this host reaches it),
    CurveZMQ where compute nodes reach the interchange over a network."""
    if config.manager_auth != "auto":
        return config.manager_auth
    return "password" if _bind_host(config.interchange_address) == "127.0.0.1" else "curve"
