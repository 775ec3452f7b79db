"""A manager: one per node, inside a pilot job (or a local block).

It dials the interchange, says how many tasks it can take (``Ready``, then the
``free`` of each ``Results``), forks workers and feeds them over pipes, and
reports results and running states in batches. A worker that dies mid-task is
replaced and its task reported as ``worker_lost`` (the interchange decides about
retries). A manager that hears nothing from its interchange past the heartbeat
threshold ends itself, its workers with it.

Its capacity adapts to the tasks' length. For tasks that run longer than
SHORT_TASK_S (a moving average of what the workers report) it holds the
configured ``workers + prefetch``. For shorter ones every message, pipe write
and wake-up costs more than the task, so it holds up to DEEP_PER_WORKER tasks per
worker, and keeps a second task in each worker's pipe, which the worker starts
the moment it sends its result. What can wait behind a slow task is bounded by
that: when a task has run LONG_RUNNING_S, or the average rises, the manager
sends what it holds beyond its configured capacity back to the interchange
(``Requeue``), for other managers; a task waiting in the pipe of a worker that
dies goes back to the queue.

Run as ``python -m funcx_flows.endpoint.manager --interchange tcp://HOST:PORT ...``.
It imports neither Prefect nor the service: it must start fast on a compute node.
The same class also runs inside the endpoint agent's loop (the ``inline``
provider): then it has no socket and no loop of its own; it hands its messages to
an ``uplink`` and the agent calls ``deliver``, ``on_events`` and ``step``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq

from funcx_flows import messages as m
from funcx_flows.endpoint.linkauth import ManagerCredentials
from funcx_flows.endpoint.sandbox import SandboxSpec, start_sandboxed_worker
from funcx_flows.endpoint.worker import cancelled_result, worker_main
from funcx_flows.errors import ConfigError, ProtocolError

log = logging.getLogger("funcx_flows.manager")
SHORT_TASK_S = 0.002
DEEP_PER_WORKER = 16
LONG_RUNNING_S = 0.02  # a task running this long shows that the tasks are not short now
RUN_TIME_WEIGHT = 0.2  # of the newest task in the moving average of run times
# A task goes into the pipe of a busy worker only if it fits in the pipe's buffer
# (64 KiB on Linux) at once: a larger write would block until the worker reads,
# while the worker may be blocked writing a large result back (both stuck).
PIPE_SAFE_BYTES = 32 * 1024
_fork = multiprocessing.get_context("fork")
PARENT_PID_ENV = "FUNCX_FLOWS_MANAGER_PARENT_PID"


@dataclass
class Worker:
    index: int
    proc: Any  # multiprocessing Process
    conn: Connection
    tasks: list[m.TaskSpec] = field(default_factory=list)  # in its pipe; the first runs
    head_since: float = 0.0  # when the first of ``tasks`` was sent or came to the head


@dataclass
class ManagerOptions:
    interchange: str
    manager_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    block_id: str = ""
    workers: int = 1
    prefetch: int = 0
    heartbeat_period_s: float = 2.0
    heartbeat_threshold_s: float = 10.0
    max_result_bytes: int = 10 * 1024 * 1024
    drain_at: float | None = None
    credentials: ManagerCredentials | None = None  # None: the interchange admits anyone
    sandbox: SandboxSpec | None = None  # None: workers are forked, unconfined


class Manager:
    def __init__(self, opts: ManagerOptions,
                 uplink: Callable[[m.Message], None] | None = None) -> None:
        """``uplink``: where messages for the interchange go when the manager runs in
        the agent's loop; None: over a DEALER socket to ``opts.interchange``."""
        self.opts = opts
        self.workers: dict[int, Worker] = {}
        self.queue: collections.deque[m.TaskSpec] = collections.deque()
        self.results: list[m.TaskResult] = []
        # A "running" state waits one turn of the loop: a task that finishes by then
        # (most short ones) needs none, and its result carries the times anyway.
        self.started: dict[str, tuple[float, int]] = {}  # task id -> (at, turn)
        self.named_cancelled: set[str] = set()  # cancels sent into a worker's pipe
        self.turn = 0
        self.credit_out = 0  # granted to the interchange and not yet used by it
        self.run_time_s: float | None = None  # moving average of the tasks' run times
        self._workers_changed = True  # the poller is built again when workers change
        self.draining = False
        self.stopping = False
        self._decoder = m.Decoder(m.INTERCHANGE_TO_MANAGER)
        self._worker_decoder = m.Decoder(m.Results)
        self._uplink = uplink
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.sock: zmq.Socket[bytes] | None = None
        if uplink is None:
            self._ctx = zmq.Context()
            self.sock = self._ctx.socket(zmq.DEALER)
            self.sock.routing_id = opts.manager_id.encode()
            self.sock.linger = 0
            self.sock.sndhwm = 0
            self.sock.rcvhwm = 0
            if opts.credentials is not None:
                opts.credentials.apply(self.sock)
        self._by_fd: dict[int, tuple[str, Worker]] = {}
        self.last_heard = time.monotonic()
        self.last_sent = 0.0

    # -------------------------------------------------------------- workers --

    def _start_worker(self, index: int) -> None:
        if self.opts.sandbox is not None:
            proc, parent = start_sandboxed_worker(self.opts.sandbox, index,
                                                  self.opts.max_result_bytes)
        else:
            parent, child = _fork.Pipe(duplex=True)
            proc = _fork.Process(target=worker_main, args=(child, self.opts.max_result_bytes),
                                 name=f"funcx-worker-{index}", daemon=True)
            proc.start()
            child.close()
        self.workers[index] = Worker(index, proc, parent)
        self._workers_changed = True

    @property
    def short_tasks(self) -> bool:
        return self.run_time_s is not None and self.run_time_s < SHORT_TASK_S

    def capacity(self) -> int:
        """How many tasks this manager wants to hold (queued, in pipes, running)."""
        o = self.opts
        base = o.workers + o.prefetch
        return max(base, o.workers * DEEP_PER_WORKER) if self.short_tasks else base

    def _held(self) -> int:
        return len(self.queue) + sum(len(w.tasks) for w in self.workers.values())

    def feed(self) -> None:
        """Idle workers first; then, for short tasks, a second task into each pipe."""
        depth = 2 if self.short_tasks else 1
        for slot in range(depth):
            for w in self.workers.values():
                if not self.queue:
                    return
                if len(w.tasks) != slot:
                    continue
                frame = m.encode(m.Tasks(tasks=[self.queue[0]]))
                if slot and len(frame) > PIPE_SAFE_BYTES:
                    return  # it waits here for an idle worker (see PIPE_SAFE_BYTES)
                spec = self.queue.popleft()
                w.tasks.append(spec)
                try:
                    w.conn.send_bytes(frame)
                except OSError:
                    continue  # its death is noticed by the sentinel
                if slot == 0:
                    w.head_since = time.time()
                    self.started[spec.task_id] = (w.head_since, self.turn)

    def _on_worker_frame(self, w: Worker) -> None:
        try:
            frame = w.conn.recv_bytes()
        except (EOFError, OSError):
            return  # dead; the sentinel handles it
        msg = self._worker_decoder.decode(frame)
        assert isinstance(msg, m.Results)
        self.results.extend(msg.results)
        for r in msg.results:
            self.started.pop(r.task_id, None)
            self.named_cancelled.discard(r.task_id)
            w.tasks = [t for t in w.tasks if t.task_id != r.task_id]
            if r.started_at and r.finished_at:
                took = max(r.finished_at - r.started_at, 0.0)
                self.run_time_s = took if self.run_time_s is None else (
                    (1 - RUN_TIME_WEIGHT) * self.run_time_s + RUN_TIME_WEIGHT * took)
        if w.tasks and w.tasks[0].task_id not in self.started:
            w.head_since = time.time()  # it runs now
            self.started[w.tasks[0].task_id] = (w.head_since, self.turn)

    def _on_worker_death(self, w: Worker, cancelled: bool = False) -> None:
        w.proc.join(1)
        code = w.proc.exitcode
        w.conn.close()
        del self.workers[w.index]
        self._workers_changed = True
        lost, waiting = (w.tasks[0], w.tasks[1:]) if w.tasks else (None, [])
        w.tasks = []
        # tasks still in the dead worker's pipe never started: back to the queue, but
        # those already cancelled (named to the worker) end cancelled here
        back = []
        for spec in waiting:
            if spec.task_id in self.named_cancelled:
                self.named_cancelled.discard(spec.task_id)
                self.results.append(cancelled_result(spec))
            else:
                back.append(spec)
        self.queue.extendleft(reversed(back))
        if lost is not None:
            self.started.pop(lost.task_id, None)
        if not cancelled and (self.stopping or code == -signal.SIGTERM):
            # Terminated from outside (the scheduler ends the pilot; it signals every
            # process of the job): the manager ends too and says Bye, and the
            # interchange retries its tasks elsewhere; a "worker lost" here could be
            # retried on this very manager, which is going away.
            self.stopping = True
            return
        if lost is not None:
            spec = lost
            if cancelled:
                err = m.ErrorInfo(code="cancelled", message="cancelled by the user")
            else:
                how = (f"killed by signal {-code}" if code is not None and code < 0
                       else f"exited with code {code}")
                err = m.ErrorInfo(
                    code="worker_lost",
                    message=f"the worker process running the task died ({how}) on "
                            f"{socket.gethostname()}")
            self.results.append(m.TaskResult(task_id=spec.task_id, ok=False, error=err,
                                             attempts=spec.attempt + 1,
                                             finished_at=time.time()))
        if not self.stopping:
            self._start_worker(w.index)

    def _cancel(self, task_ids: list[str]) -> None:
        wanted = set(task_ids)
        for w in list(self.workers.values()):
            self._on_worker_frame_if_ready(w)  # the task may be done: its result first
            # A worker running a cancelled task is killed; what waited in its pipe
            # goes back to the queue, which is swept next. A cancelled task waiting
            # behind a task that goes on is named to the worker, which reports it
            # cancelled instead of running it.
            if w.tasks and w.tasks[0].task_id in wanted:
                w.proc.kill()
                self._on_worker_death(w, cancelled=True)
                continue
            behind = [t.task_id for t in w.tasks[1:] if t.task_id in wanted]
            if behind:
                # remembered until its answer comes: if the worker dies first, the
                # task must not go back to the queue and run on its replacement
                self.named_cancelled.update(behind)
                with contextlib.suppress(OSError):  # dead: the sentinel handles it
                    w.conn.send_bytes(m.encode(m.Cancel(task_ids=behind)))
        kept: collections.deque[m.TaskSpec] = collections.deque()
        for spec in self.queue:
            if spec.task_id in wanted:
                self.results.append(cancelled_result(spec))
            else:
                kept.append(spec)
        self.queue = kept

    # ---------------------------------------------------------------- wire --

    def _send(self, msg: m.Message) -> None:
        if self._uplink is not None:
            self._uplink(msg)
        else:
            assert self.sock is not None
            self.sock.send(m.encode(msg), copy=False)
        self.last_sent = time.monotonic()

    def _give_back(self) -> None:
        """Tasks turned long: what is held beyond the capacity and still queued here
        (not in a worker's pipe) goes back to the interchange, newest first."""
        if self.short_tasks:
            busy = [w.head_since for w in self.workers.values() if w.tasks]
            running_for = time.time() - min(busy) if busy else 0.0
            if running_for >= LONG_RUNNING_S:
                self.run_time_s = running_for
        excess = min(self._held() - self.capacity(), len(self.queue))
        if excess > 0:
            back = [self.queue.pop() for _ in range(excess)]
            self._send(m.Requeue(task_ids=[t.task_id for t in reversed(back)]))

    def _flush(self) -> None:
        self.turn += 1
        self._give_back()
        due = [t for t, (_, turn) in self.started.items() if turn < self.turn - 1]
        if due:  # still running a whole turn later: now they are worth a message
            self._send(m.TaskStates(states=[
                m.TaskState(task_id=t, state="running", at=self.started.pop(t)[0])
                for t in due]))
        free = 0 if self.draining or self.stopping else max(
            0, self.capacity() - self.credit_out - self._held())
        if self.results:
            self._send(m.Results(results=self.results, free=free))
            self.results = []
        elif free:
            self._send(m.Ready(free=free))
        self.credit_out += free

    def deliver(self, msg: m.Message) -> None:
        """A message from the interchange (decoded); sends nothing back at once."""
        self.last_heard = time.monotonic()
        if isinstance(msg, m.Tasks):
            self.queue.extend(msg.tasks)
            self.credit_out = max(0, self.credit_out - len(msg.tasks))
        elif isinstance(msg, m.Cancel):
            self._cancel(msg.task_ids)
        elif isinstance(msg, m.Shutdown):
            log.info("interchange asked to shut down: %s", msg.reason)
            self.stopping = True

    # ----------------------------------------------------------------- run --

    def start(self) -> None:
        """Fork the workers and register with the interchange."""
        o = self.opts
        for i in range(o.workers):
            self._start_worker(i)
        if self.sock is not None:
            self.sock.connect(o.interchange)
        self._send(m.ManagerRegister(
            manager_id=o.manager_id, hostname=socket.gethostname(), block_id=o.block_id,
            workers=o.workers, cores=os.cpu_count() or 1, gpus=_count_gpus(),
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            drain_at=o.drain_at))
        self.credit_out = self.capacity()
        self._send(m.Ready(free=self.credit_out))

    def poll_fds(self) -> list[int]:
        """The file descriptors to watch: each worker's pipe and its death sentinel."""
        if self._workers_changed:
            self._by_fd = {}
            for w in self.workers.values():
                self._by_fd[w.conn.fileno()] = ("conn", w)
                self._by_fd[w.proc.sentinel] = ("dead", w)
            self._workers_changed = False
        return list(self._by_fd)

    def poll_ms(self) -> int:
        """How long the loop may sleep: a "running" state waiting for its turn goes
        out within 50 ms, and short tasks that turned long are noticed as soon."""
        watch = self.started or (self.short_tasks and self._held())
        return 50 if watch else int(self.opts.heartbeat_period_s * 1000)

    def on_events(self, ready: Collection[Any]) -> None:
        """Results from workers whose pipes are readable, then deaths."""
        by_fd = self._by_fd
        for fd in ready:
            if isinstance(fd, int) and fd in by_fd:
                kind, w = by_fd[fd]
                if kind == "conn" and self.workers.get(w.index) is w:
                    self._on_worker_frame(w)
        for fd in ready:
            if isinstance(fd, int) and fd in by_fd:
                kind, w = by_fd[fd]
                if (kind == "dead" and self.workers.get(w.index) is w
                        and not w.proc.is_alive()):
                    self._on_worker_frame_if_ready(w)
                    self._on_worker_death(w)

    def step(self) -> None:
        """Feed workers, beat, and tell the interchange what happened."""
        self.feed()
        self._periodic()
        self._flush()

    def run(self) -> int:
        """The manager's own loop, as a process on a node."""
        assert self.sock is not None
        self.start()
        poller = zmq.Poller()
        try:
            while not self.stopping:
                if self._workers_changed:
                    poller = zmq.Poller()
                    poller.register(self.sock, zmq.POLLIN)
                    for fd in self.poll_fds():
                        poller.register(fd, zmq.POLLIN)
                events = dict(poller.poll(self.poll_ms()))
                if self.stopping:  # SIGTERM arrived: the pilot ends; leave it to Bye
                    break
                if self.sock in events:
                    while True:
                        try:
                            frame = self.sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        try:
                            self.deliver(self._decoder.decode(frame))
                        except ProtocolError as exc:
                            log.warning("dropped a bad message: %s", exc)
                        except Exception:  # mishandled, but the node's workers go on
                            log.exception("error while handling a message; dropped it")
                self.on_events(events)
                self.step()
        finally:
            self.shutdown()
        return 0

    def _on_worker_frame_if_ready(self, w: Worker) -> None:
        """A worker may have sent its result just before it died: keep it."""
        try:
            if w.conn.poll(0):
                self._on_worker_frame(w)
        except (EOFError, OSError):
            pass

    def _periodic(self) -> None:
        now = time.monotonic()
        o = self.opts
        if now - self.last_heard > o.heartbeat_threshold_s:
            log.error("no word from the interchange for %.0fs: stopping",
                      now - self.last_heard)
            self.stopping = True
            return
        if o.drain_at is not None and not self.draining and time.time() >= o.drain_at:
            self.draining = True
            self._send(m.Drain(reason="walltime ends soon"))
        if now - self.last_sent >= o.heartbeat_period_s:
            self._send(m.Heartbeat(sent_at=time.time()))
        if self.draining and not self._held():
            self.stopping = True

    def shutdown(self) -> None:
        """Kill the workers, report what is left, and say goodbye."""
        self.stopping = True
        for w in list(self.workers.values()):
            if w.proc.is_alive():
                w.proc.kill()
        for w in list(self.workers.values()):
            w.proc.join(5)
            w.conn.close()
        try:
            self._flush()
            self._send(m.Bye(reason="manager stopping"))
        except zmq.ZMQError:
            pass
        if self.sock is not None and self._ctx is not None:
            self.sock.close(linger=500)
            self._ctx.term()


def _follow_parent() -> None:
    """A manager started directly by a local agent ends with it (kill -9 included)."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PDEATHSIG
    if os.getppid() != int(expected):
        sys.exit("the endpoint that started this manager is gone")


def _count_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m funcx_flows.endpoint.manager")
    p.add_argument("--interchange", required=True)
    p.add_argument("--manager-id", default=None)
    p.add_argument("--block-id", default="")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--prefetch", type=int, default=0)
    p.add_argument("--heartbeat-period", type=float, default=2.0)
    p.add_argument("--heartbeat-threshold", type=float, default=10.0)
    p.add_argument("--max-result-bytes", type=int, default=10 * 1024 * 1024)
    p.add_argument("--drain-at", type=float, default=None)
    p.add_argument("--credentials", type=Path, default=None,
                   help="the file the endpoint wrote for its managers (see linkauth)")
    p.add_argument("--sandbox", default=None,
                   help="JSON of a SandboxSpec: workers run in bubblewrap (see sandbox)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s manager: %(message)s")
    try:
        credentials = None if a.credentials is None else ManagerCredentials.load(a.credentials)
        sandbox = None if a.sandbox is None else SandboxSpec.from_json(a.sandbox)
        if sandbox is not None:
            sandbox.check()  # on this node: bwrap present, the Python not hidden
    except ConfigError as exc:
        sys.exit(f"manager: {exc.message}")
    _follow_parent()
    opts = ManagerOptions(
        interchange=a.interchange, block_id=a.block_id, workers=a.workers, prefetch=a.prefetch,
        heartbeat_period_s=a.heartbeat_period, heartbeat_threshold_s=a.heartbeat_threshold,
        max_result_bytes=a.max_result_bytes, drain_at=a.drain_at, credentials=credentials,
        sandbox=sandbox)
    if a.manager_id:
        opts.manager_id = a.manager_id
    manager = Manager(opts)
    signal.signal(signal.SIGTERM, lambda *_: setattr(manager, "stopping", True))
    sys.exit(manager.run())


if __name__ == "__main__":
    main()
