"""The agent: an endpoint's link to the service, and the owner of its blocks.

One thread, one poll loop over two sockets: a CurveZMQ DEALER to the service
and the interchange's ROUTER to the managers (the loop drives the interchange;
tasks and results pass to and fro as objects). It keeps results in the on-disk
spool until the service acknowledges them, and re-says Hello (with the tasks it
holds) after every lost link. A second thread, the scaler, asks the provider
for blocks of managers: a scheduler's commands (sbatch, squeue...) can take
seconds, and must not hold up tasks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zmq

from funcx_flows import messages as m
from funcx_flows.endpoint.config import EndpointConfig, walltime_seconds
from funcx_flows.endpoint.container import ContainerSpec, parse_options
from funcx_flows.endpoint.interchange import Interchange
from funcx_flows.endpoint.launch import LaunchPlan, ManagerOptions, MPIPool
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
from funcx_flows.endpoint.providers.base import (
    ACTIVE_STATES,
    CANCELLED,
    ENDED,
    FAILED,
    Block,
    Provider,
)
from funcx_flows.endpoint.providers.inline import InlineManagers, InlineProvider
from funcx_flows.endpoint.providers.registry import is_batch
from funcx_flows.endpoint.sandbox import SandboxSpec, default_spec
from funcx_flows.endpoint.spool import Spool
from funcx_flows.endpoint.strategy import Actions, BlockView, Inputs, decide
from funcx_flows.errors import CommandError, ProtocolError, ResultTooLarge
from funcx_flows.home import write_secret
from funcx_flows.memory import release_free_memory
from funcx_flows.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

AGENT_VERSION = "1"
RESEND_BATCH = 500
RESULTS_HOLD_S = 0.002  # under load, results wait at most this long to leave together
RESULTS_HOLD_MAX = 256
RESEND_UNACKED_S = 10.0  # results sent but not acknowledged this long are sent again
TRIM_PERIOD_S = 30.0  # at most this often, when idle, freed heap goes back to the OS
# A burst from the service (a backlog: hundreds of 512-task batches) is taken in bites
# between dispatches, so managers get work while the rest is still decoded.
SERVICE_FRAMES_PER_TURN = 16
MANAGER_CREDENTIALS = "manager-credentials.json"  # in the endpoint's folder (see linkauth)


@dataclass(frozen=True)
class Registration:
    endpoint_id: str
    zmq_url: str
    service_public_key: str
    public_key: str
    secret_key: str
    service_url: str = ""  # the HTTP(S) origin it registered with
    link_token: str = ""  # its secret for the WebSocket link


def link_transport(config: EndpointConfig, reg: Registration) -> str:
    """``zmq`` or ``websocket``: ``auto`` takes the WebSocket when the service is
    reached over https:// (one port, through any proxy that passes HTTPS)."""
    if config.link != "auto":
        return str(config.link)
    return "websocket" if reg.service_url.startswith("https://") else "zmq"


def load_or_create_keys(folder: Path) -> tuple[str, str]:
    path = folder / "curve.json"
    try:
        data = json.loads(path.read_text())
        return str(data["public"]), str(data["secret"])
    except (OSError, ValueError, KeyError):
        public, secret = zmq.curve_keypair()
        write_secret(path, json.dumps({"public": public.decode(), "secret": secret.decode()}))
        return public.decode(), secret.decode()


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
        self.held: set[str] = set()
        self._results: list[m.TaskResult] = []
        self._results_since: float | None = None  # when the oldest of them came
        # Results the spool could not take (disk full, read-only): kept here, sent
        # anyway, and spooled again every second until the spool takes them.
        self.unspooled: dict[str, m.TaskResult] = {}
        self.unremoved: set[str] = set()  # acknowledged, but the spool could not forget
        self.spool_error = ""
        self.sent_at: dict[str, float] = {}  # results sent and not yet acknowledged
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
        self.status = m.EndpointStatus()
        self.blocks: list[Block] = []
        self.block_failures: list[float] = []
        self.refused_blocks: list[Block] = []  # submissions the scheduler refused
        self.idle_since: dict[str, float | None] = {}
        self._from_service = m.Decoder(m.SERVICE_TO_AGENT)
        self._scaler = threading.Thread(target=self._scale_loop, name="scaler", daemon=True)
        self._decide: Callable[[Agent], Actions] = scaling_decision
        self._scaler_stop = threading.Event()
        self.sandbox: SandboxSpec | None = None
        if config.sandbox == "bwrap":  # the endpoint folder is <funcx home>/endpoints/NAME
            self.sandbox = default_spec([str(folder), *config.sandbox_hide],
                                        config.sandbox_keep, folder.resolve().parent.parent)
            self.sandbox.check()
        self.container: ContainerSpec | None = None
        if config.container is not None:
            k = config.container
            self.container = ContainerSpec(type=k.type, image=k.image, python=k.python,
                                           options=parse_options(k.options))
            self.container.check()  # no engine, no image: a message now, not per worker
        # only the managers this run starts may connect (see linkauth)
        self.gate = Gate(manager_auth(config))
        # absolute: a pilot job runs its managers in another working directory
        self.credentials_path = (folder / MANAGER_CREDENTIALS).resolve()
        self.gate.credentials.save(self.credentials_path)
        self.interchange = Interchange(
            self.ctx, _bind_host(config.interchange_address),
            max_retries=config.max_retries_on_system_failure,
            heartbeat_period_s=config.heartbeat_period_s,
            heartbeat_threshold_s=config.heartbeat_threshold_s, gate=self.gate)
        c = config
        self.launch = LaunchPlan(
            interchange=f"tcp://{c.interchange_address}:{self.interchange.port}",
            workers=c.max_workers_per_node, prefetch=c.max_workers_per_node,
            heartbeat_period_s=c.heartbeat_period_s,
            heartbeat_threshold_s=c.heartbeat_threshold_s,
            credentials=str(self.credentials_path), sandbox=self.sandbox,
            runs_for_s=(walltime_seconds(c.walltime) - c.walltime_margin_s
                        if is_batch(c.provider) else None),
            mpi=None if c.mpi is None else MPIPool(**c.mpi.model_dump()),
            container=self.container)
        # blocks whose manager runs in this loop (the inline provider), else None
        self.inline = (InlineManagers(provider, self.interchange, self.manager_options)
                       if isinstance(provider, InlineProvider) else None)

    # ------------------------------------------------------------- service --

    def _connect(self) -> None:
        if self.link is not None:
            self.link.close()
        r = self.reg
        if self.transport == "websocket":
            self.link = WsServiceLink(self.ctx, WsTarget(link_url(r.service_url, r.endpoint_id),
                                                         r.link_token))
        else:
            self.link = ZmqServiceLink(self.ctx, ZmqTarget(
                r.zmq_url, r.endpoint_id, r.public_key, r.secret_key, r.service_public_key))
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
            log.info("connected to the service (%d results to resend)",
                     len(self.spool) + len(self.unspooled))
            for batch in self.spool.batches(RESEND_BATCH):
                self._send_results(batch)
            pending = list(self.unspooled.values())
            for i in range(0, len(pending), RESEND_BATCH):
                self._send_results(pending[i:i + RESEND_BATCH])
        elif isinstance(msg, m.Tasks):
            self._on_tasks(msg.tasks)
        elif isinstance(msg, m.Cancel):
            self.interchange.cancel(msg.task_ids)
        elif isinstance(msg, m.ResultsAck):
            for task_id in msg.task_ids:
                self.sent_at.pop(task_id, None)
                self.unspooled.pop(task_id, None)
            self._forget(msg.task_ids)
        elif isinstance(msg, m.Bye):
            self._link_lost(f"the service said goodbye: {msg.reason}")

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
            why = mpi_refusal(spec.resources, self.config.mpi is not None,
                              self.config.nodes_per_block,
                              self.config.mpi.slots_per_node if self.config.mpi else None)
            if why:  # it would wait for ever
                refused.append(m.TaskResult(task_id=spec.task_id, ok=False, error=m.ErrorInfo(
                    code=CommandError.code, message=why)))
                continue
            self.held.add(spec.task_id)
            fresh.append(spec)
        if fresh:
            self.interchange.submit(fresh)
        if refused:
            self._on_results(refused)
            self._flush_results(now=True)

    # --------------------------------------------------------- interchange --

    def _on_results(self, results: list[m.TaskResult]) -> None:
        limit = self.max_result_bytes
        self._results.extend(r if len(r.data) <= limit else _too_large(r, limit)
                             for r in results)

    def _flush_results(self, now: bool = False) -> None:
        """Send what the interchange delivered, then spool it (one transaction).
        Sending first takes the spool's write off the latency path and loses nothing:
        the acknowledgement that lets the spool forget a result is read by this
        thread, after the write. Under load they may wait a little (``_hold``)."""
        if not self._results or (not now and self._hold()):
            return
        results, self._results = self._results, []
        self._results_since = None
        self.held.difference_update(r.task_id for r in results)
        if self.link_up:
            self._send_results(results)
        self._spool(results)

    def _hold(self) -> bool:
        """Whether results wait for more: only under load (more tasks held than
        there are workers to run them), for at most RESULTS_HOLD_S and
        RESULTS_HOLD_MAX results. A burst's results then leave in a few large messages
        and spool transactions instead of one per loop turn, each of which costs the
        service and the spool more than its size; a lone task never waits."""
        now = time.monotonic()
        if self._results_since is None:
            self._results_since = now
        queued = len(self.held) - len(self._results)
        return (queued > max(self.status.workers_total, 1)
                and len(self._results) < RESULTS_HOLD_MAX
                and now - self._results_since < RESULTS_HOLD_S)

    def _hold_ms(self, timeout: int) -> int:
        """The poll's timeout, shortened to when held results must leave."""
        if self._results_since is None or not self._results:
            return timeout
        left = self._results_since + RESULTS_HOLD_S - time.monotonic()
        return max(0, min(timeout, math.ceil(left * 1000)))

    def _send_results(self, results: list[m.TaskResult]) -> None:
        self._send(m.Results(results=results))
        now = time.monotonic()
        for r in results:
            self.sent_at[r.task_id] = now

    # --------------------------------------------------------------- spool --

    def _spool(self, results: list[m.TaskResult]) -> None:
        try:
            self.spool.add(results)
        except (sqlite3.Error, OSError) as exc:
            for r in results:
                self.unspooled[r.task_id] = r
            self._spool_failed("write", exc)

    def _forget(self, task_ids: list[str]) -> None:
        try:
            self.spool.remove(task_ids)
        except sqlite3.Error as exc:
            self.unremoved.update(task_ids)
            self._spool_failed("update", exc)

    def _spool_failed(self, what: str, exc: sqlite3.Error | OSError) -> None:
        problem = (f"cannot {what} the result spool at {self.spool.path}: {exc}; "
                   f"{len(self.unspooled)} results kept in memory until the service "
                   "acknowledges them")
        if not self.spool_error:
            log.error("%s", problem)
            self.interchange.errors.append(problem)
        self.spool_error = problem

    def _retry_spool(self) -> None:
        if self.unspooled:
            pending = list(self.unspooled.values())
            self.unspooled.clear()
            self._spool(pending)
        if self.unremoved:
            ids, self.unremoved = list(self.unremoved), set()
            self._forget(ids)
        if self.spool_error and not self.unspooled and not self.unremoved:
            log.info("the spool at %s is writable again", self.spool.path)
            self.spool_error = ""

    def _resend_unacknowledged(self, now: float) -> None:
        """Results the service did not acknowledge in time (it could not store them,
        or the acknowledgement was lost) are sent again; the service ignores repeats."""
        stale = [t for t, at in self.sent_at.items() if now - at > RESEND_UNACKED_S]
        if not stale:
            return
        again = [self.unspooled[t] for t in stale if t in self.unspooled]
        again += self.spool.get(t for t in stale if t not in self.unspooled)
        log.info("resending %d unacknowledged results", len(again))
        for i in range(0, len(again), RESEND_BATCH):
            self._send_results(again[i:i + RESEND_BATCH])

    def _from_interchange(self) -> None:
        results, states, status = self.interchange.take()
        if results:
            self._on_results(results)
        if states and self.link_up:
            self._send(m.TaskStates(states=states))
        if status is not None:
            status.blocks = [m.BlockInfo(block_id=b.block_id, job_id=b.job_id, state=b.state,
                                         nodes=b.nodes, submitted_at=b.submitted_at,
                                         message=b.message)
                             for b in [*self.refused_blocks, *self.blocks[-20:]]]
            self.status = status
            if self.link_up:
                self._send(status)
            self._write_status()

    def _write_status(self) -> None:
        data = msgspec.to_builtins(self.status)
        data.update(endpoint_id=self.reg.endpoint_id, link_up=self.link_up,
                    results_spooled=len(self.spool), updated_at=time.time(), pid=os.getpid())
        if self.spool_error:
            data["spool_error"] = self.spool_error
        tmp = self.folder / "status.json.tmp"
        try:
            tmp.write_text(json.dumps(data))
            tmp.replace(self.folder / "status.json")
        except OSError as exc:  # a full or read-only disk must not stop the agent
            log.warning("cannot write %s: %s", tmp.with_suffix(""), exc)

    # -------------------------------------------------------------- blocks --

    def manager_options(self, block_id: str) -> ManagerOptions:
        return self.launch.options(block_id, self.max_result_bytes, time.time())

    def manager_command(self, block_id: str) -> str:
        command: str = self.manager_options(block_id).command()
        return command

    def _submit_blocks(self, n: int) -> None:
        for _ in range(n):
            block_id = uuid.uuid4().hex[:8]
            try:
                block = self.provider.submit(block_id, self.manager_command(block_id))
            except Exception as exc:  # the scheduler refused: record, show, back off
                msg = f"{type(exc).__name__}: {exc}".strip()
                log.error("could not submit block %s: %s", block_id, msg)
                self.block_failures.append(time.time())
                self.refused_blocks = [*self.refused_blocks[-4:], Block(
                    block_id=block_id, state=FAILED, message=msg[:1000],
                    nodes=self.config.nodes_per_block)]
                self.interchange.errors.append(f"block {block_id} could not start: {msg[:300]}")
                return
            log.info("submitted block %s (job %s)", block.block_id, block.job_id)

    def _strategy(self, decide: Callable[[Agent], Actions]) -> None:
        before = {b.block_id: b.state for b in self.blocks}
        self.blocks = self.provider.poll()
        for b in self.blocks:
            if b.state == FAILED and before.get(b.block_id) != FAILED:
                self.block_failures.append(time.time())
                self.interchange.errors.append(f"block {b.block_id} failed: {b.message[:300]}")
            elif b.state in (ENDED, CANCELLED) and before.get(b.block_id) in ACTIVE_STATES:
                log.info("block %s %s", b.block_id, b.state)
        self._track_idle()
        actions = decide(self)
        if actions.cancel:
            log.info("releasing blocks %s: %s", ", ".join(actions.cancel), actions.reason)
            self.provider.cancel(list(actions.cancel))
        if actions.submit > 0:
            log.info("submitting %d block(s): %s", actions.submit, actions.reason)
            self._submit_blocks(actions.submit)

    def _scale_loop(self) -> None:
        """The scaler thread: the strategy every ``strategy_period`` seconds. It reads
        the status and the held tasks the loop keeps, and alone uses the provider."""
        while not self._scaler_stop.wait(self.config.strategy_period):
            try:
                self._strategy(self._decide)
            except Exception as exc:  # a scheduler's hiccup must not end scaling
                log.exception("the scaling strategy failed; trying again next period")
                self.interchange.errors.append(
                    f"scaling failed: {type(exc).__name__}: {exc}"[:300])

    def _track_idle(self) -> None:
        now = time.time()
        busy = {b.block_id: b.busy for b in self.status.block_load}
        for b in self.blocks:
            if not b.active:
                self.idle_since.pop(b.block_id, None)
            elif busy.get(b.block_id, 0) > 0:
                self.idle_since[b.block_id] = None
            elif self.idle_since.get(b.block_id) is None:
                self.idle_since[b.block_id] = now

    # ----------------------------------------------------------------- run --

    def run(self, decide: Callable[[Agent], Actions]) -> None:
        self._submit_blocks(self.config.init_blocks)
        self.blocks = self.provider.poll()
        self._decide = decide
        self._scaler.start()
        self._connect()
        ix = self.interchange
        inline = self.inline
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
                wait = self._hold_ms(timeout)
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
            if self.unspooled or self.unremoved or self.spool_error:
                self._retry_spool()
            if self.link_up:
                self._resend_unacknowledged(now)
        if not self.held and now - self.last_trim >= TRIM_PERIOD_S:
            self.last_trim = now  # idle: what a burst freed goes back to the OS
            release_free_memory()

    def _shutdown(self) -> None:
        log.info("stopping")
        try:
            self._flush_results(now=True)  # none kept waiting (see _hold)
            if self.link_up:
                self._send(m.Bye(reason="endpoint stopping"))
            self.interchange.close()
            if self.inline is not None:
                self.inline.close()
            self._scaler_stop.set()
            if self._scaler.is_alive():
                self._scaler.join(60)  # a scheduler command may be under way
        finally:
            self.provider.close()
            if self.link is not None:
                self.link.close(linger=500)
            self.spool.close()
            self.ctx.term()
            self.credentials_path.unlink(missing_ok=True)


def _too_large(r: m.TaskResult, limit: int) -> m.TaskResult:
    return m.TaskResult(
        task_id=r.task_id, ok=False, stdout=r.stdout, started_at=r.started_at,
        finished_at=r.finished_at, attempts=r.attempts, error=m.ErrorInfo(
            code=ResultTooLarge.code,
            message=f"the result is {len(r.data)} bytes; the service's limit is {limit}"))


def _bind_host(address: str) -> str:
    return "127.0.0.1" if address in ("127.0.0.1", "localhost") else "*"


def manager_auth(config: EndpointConfig) -> Mechanism:
    """``auto``: a password on the loopback interface (only this host reaches it),
    CurveZMQ where compute nodes reach the interchange over a network."""
    if config.manager_auth != "auto":
        return config.manager_auth
    return "password" if _bind_host(config.interchange_address) == "127.0.0.1" else "curve"


def scaling_decision(agent: Agent) -> Actions:
    """The strategy's inputs from what the agent knows; see ``strategy.decide``."""
    c = agent.config
    workers = {b.block_id: b.workers for b in agent.status.block_load}
    busy = {b.block_id: b.busy for b in agent.status.block_load}
    blocks = tuple(BlockView(b.block_id, b.state, workers.get(b.block_id, 0),
                             busy.get(b.block_id, 0), agent.idle_since.get(b.block_id))
                   for b in agent.blocks if b.active)
    waiting = max(agent.status.tasks_queued,
                  len(agent.held) - agent.status.tasks_running)
    now = time.time()
    return decide(Inputs(
        now=now, tasks_waiting=waiting, blocks=blocks, min_blocks=c.min_blocks,
        max_blocks=c.max_blocks,
        workers_per_block=c.max_workers_per_node * c.nodes_per_block,
        idle_timeout=c.idle_timeout,
        failures=tuple(t for t in agent.block_failures if now - t < 3600)))


def host_metadata() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "python": platform.python_version(),
            "platform": platform.platform()}
