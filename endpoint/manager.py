"""A manager: one per node, inside a pilot job (or a local block), or in the agent's loop.

This is the manager's shell: processes, pipes, the socket and the clock. What
it decides (capacity, credit, what goes into which pipe, cancels, give-back,
worker deaths, walltime) is ``ManagerState`` (manager_state.py), a pure state
machine: the shell turns what happens into its events and carries out the
instructions it answers with::

    interchange --Tasks/Cancel/Shutdown--> socket (DEALER) or deliver() ---+
                                                                           | events
    worker i --Results--> pipe i, its death --> sentinel i ----------------+--> ManagerState
                                                                           |        |
    interchange <--Register/Ready/Results/Requeue/Drain/Bye-- Send <-------+--------+ instructions
    worker i    <--Tasks/Cancel frames-- ToWorker(i); StartWorker/KillWorker(i): fork or exec, kill

The shell alone keeps time for the link: it beats when it has sent nothing for a
heartbeat period, and stops when the interchange has been silent past the
threshold. Workers are forked, or exec'd inside bubblewrap (sandbox.py) when the
endpoint confines its grantees' code, or inside a container (container.py);
tasks that name an image of their own run in containers of it, kept warm (the
policy: warmpool.py). On an MPI endpoint the manager makes its block's node pool
(mpi.py) and hands it to its workers in their environment.

Run as ``python -m funcx_flows.endpoint.manager --options JSON`` (a
``ManagerOptions`` document: launch.py). It imports neither Prefect nor the
service: it must start fast on a compute node. The same class runs inside the
endpoint agent's loop (the ``inline`` provider): then it has no socket and no loop
of its own; it hands its messages to an ``uplink`` and the agent calls
``deliver``, ``on_events`` and ``step``.

(Past 400 lines on purpose: the shell starts, watches, kills and cleans up four
kinds of worker (forked, in bubblewrap, in the endpoint's container, in a task's
own warm container) for one loop and one core; split, each half would need the
other's books of workers and descriptors.)
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq

from funcx_flows import messages as m
from funcx_flows.endpoint.container import remove_containers, start_container_worker
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.linkauth import ManagerCredentials
from funcx_flows.endpoint.manager_state import (
    CancelArrived,
    Closing,
    Event,
    Feed,
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
    WorkerNotStarted,
    WorkerResults,
)
from funcx_flows.endpoint.mpi import pool_environment
from funcx_flows.endpoint.sandbox import start_sandboxed_worker
from funcx_flows.endpoint.taskdir import after_worker
from funcx_flows.endpoint.worker import worker_main
from funcx_flows.errors import ConfigError, ProtocolError

log = logging.getLogger("funcx_flows.manager")
_fork = multiprocessing.get_context("fork")
PARENT_PID_ENV = "FUNCX_FLOWS_MANAGER_PARENT_PID"
WATCH_MS = 50  # the loop's longest sleep while ManagerState is watching the time


@dataclass(eq=False)
class WorkerProcess:
    index: int
    proc: Any  # multiprocessing Process, or sandbox.ExecWorker
    conn: Connection


class Manager:
    def __init__(self, opts: ManagerOptions,
                 uplink: Callable[[m.Message], None] | None = None,
                 credentials: ManagerCredentials | None = None) -> None:
        """``uplink``: where messages for the interchange go when the manager runs in
        the agent's loop; None: over a DEALER socket to ``opts.interchange``,
        authenticated with ``credentials`` (None: the interchange admits anyone)."""
        self.opts = opts
        self.manager_id = opts.manager_id or uuid.uuid4().hex[:12]
        self.state = ManagerState(opts, self.manager_id, _node())
        self.workers: dict[int, WorkerProcess] = {}
        self._workers_changed = True  # the poller is built again when workers change
        self._by_fd: dict[int, tuple[str, WorkerProcess]] = {}
        self._decoder = m.Decoder(m.INTERCHANGE_TO_MANAGER)
        self._worker_decoder = m.Decoder(m.Results)
        self._uplink = uplink
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.sock: zmq.Socket[bytes] | None = None
        self._connected = False
        if uplink is None:
            self._ctx = zmq.Context()
            self.sock = self._ctx.socket(zmq.DEALER)
            self.sock.routing_id = self.manager_id.encode()
            self.sock.linger = 0
            self.sock.sndhwm = 0
            self.sock.rcvhwm = 0
            if credentials is not None:
                credentials.apply(self.sock)
        self.last_heard = time.monotonic()
        self.last_sent = 0.0
        self._container_prefix = f"funcx-worker-{self.manager_id}-"
        # task folders of forked workers (a container's or a sandbox's are their own)
        boxed = opts.sandbox is not None or (opts.container and opts.container.image)
        self._task_dirs = None if boxed else opts.task_dir
        self._images: set[str] = set()  # tasks' own images the engine was found to have
        self._unstarted: list[WorkerNotStarted] = []  # told to the core one at a time
        self._worker_env: dict[str, str] = {}  # what every worker starts with
        self._pool_file: Path | None = None
        if opts.mpi is not None:
            self._worker_env, self._pool_file = pool_environment(
                opts.mpi.launcher, opts.mpi.launcher_options, opts.mpi.slots_per_node,
                self.manager_id)
        self._do: dict[type[Any], Callable[[Any], None]] = {  # (ToWorker: inline in _run)
            Send: lambda ins: self._send(ins.msg),
            StartWorker: lambda ins: self._start_worker(ins.worker, ins.image),
            KillWorker: lambda ins: self._kill_worker(ins.worker)}

    @property
    def stopping(self) -> bool:
        stopping: bool = self.state.stopping
        return stopping

    def stop(self, reason: str) -> None:
        self.state.handle(StopAsked(reason))

    # ---------------------------------------------------- carrying it out --

    def _run(self, event: Event) -> None:
        """Hand the core an event and carry out what it answers, in order (once or
        twice per task: one call, no list walked when it answers nothing)."""
        instructions = self.state.handle(event)
        if instructions:
            do = self._do
            for ins in instructions:
                if type(ins) is ToWorker:  # once per task: no call to dispatch it
                    w = self.workers.get(ins.worker)
                    if w is not None:
                        try:  # (no contextlib.suppress: this is once per task)  # noqa: SIM105
                            w.conn.send_bytes(ins.frame)
                        except OSError:
                            pass  # its death is noticed by the sentinel
                else:
                    do[type(ins)](ins)

    def _send(self, msg: m.Message) -> None:
        if self._uplink is not None:
            self._uplink(msg)
        else:
            assert self.sock is not None
            if not self._connected:  # after the workers are forked: they must not
                self.sock.connect(self.opts.interchange)  # inherit a live connection
                self._connected = True
            self.sock.send(m.encode(msg), copy=False)
        self.last_sent = time.monotonic()

    def _start_worker(self, index: int, image: str | None = None) -> None:
        o = self.opts
        if image is not None:  # a task's own image (warmpool.py), or why it cannot be
            assert o.container is not None
            why = "" if image in self._images else o.container.image_missing(image)
            if why:
                self._not_started(WorkerNotStarted(index, f"container_image: {why}",
                                                   time.time()))
                return
            self._images.add(image)
            name = f"{self._container_prefix}{index}-{uuid.uuid4().hex[:6]}"
            proc, parent = start_container_worker(replace(o.container, image=image), name,
                                                  o.worker_args(index))
        elif o.sandbox is not None:
            proc, parent = start_sandboxed_worker(o.sandbox, o.worker_args(index))
        elif o.container is not None and o.container.image:
            name = f"{self._container_prefix}{index}-{uuid.uuid4().hex[:6]}"
            proc, parent = start_container_worker(o.container, name, o.worker_args(index))
        else:
            parent, child = _fork.Pipe(duplex=True)
            proc = _fork.Process(target=worker_main,
                                 args=(child, o.max_result_bytes, self._worker_env,
                                       o.task_dir),
                                 name=f"funcx-worker-{index}", daemon=True)
            proc.start()
            child.close()
        self.workers[index] = WorkerProcess(index, proc, parent)
        self._workers_changed = True

    def _not_started(self, event: WorkerNotStarted) -> None:
        """Tell the core, after the instruction that asked for the worker: one at a
        time (what it answers may ask for another worker that cannot start)."""
        self._unstarted.append(event)
        if len(self._unstarted) == 1:
            while self._unstarted:
                self._run(self._unstarted[0])
                self._unstarted.pop(0)

    def _kill_worker(self, index: int, join_s: float = 1.0) -> None:
        w = self.workers.pop(index, None)
        if w is None:
            return
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(join_s)
        w.conn.close()
        self._workers_changed = True
        if self._task_dirs:  # the folder of the task it was running (cancelled)
            after_worker(self._task_dirs, w.proc.pid, keep=False)

    # -------------------------------------------------------- what happens --

    def start(self) -> None:
        """Fork the workers and register with the interchange."""
        self._run(Started(time.time()))

    def deliver(self, msg: m.Message) -> None:
        """A message from the interchange (decoded)."""
        self.last_heard = time.monotonic()
        if isinstance(msg, m.Tasks):
            self._run(TasksArrived(msg.tasks, time.time()))
        elif isinstance(msg, m.Cancel):
            for w in list(self.workers.values()):
                self._read_if_ready(w)  # a task may be done: its result first
            self._run(CancelArrived(msg.task_ids, time.time()))
        elif isinstance(msg, m.Shutdown):
            log.info("interchange asked to shut down: %s", msg.reason)
            self.stop(msg.reason)

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
        out within WATCH_MS, and short tasks that turned long are noticed as soon."""
        return WATCH_MS if self.state.watching else int(self.opts.heartbeat_period_s * 1000)

    def on_events(self, ready: Collection[Any]) -> None:
        """Results from workers whose pipes are readable, then deaths."""
        by_fd = self._by_fd
        for fd in ready:
            if isinstance(fd, int) and fd in by_fd:
                kind, w = by_fd[fd]
                if kind == "conn" and self.workers.get(w.index) is w:
                    self._read(w)
        for fd in ready:
            if isinstance(fd, int) and fd in by_fd:
                kind, w = by_fd[fd]
                if (kind == "dead" and self.workers.get(w.index) is w
                        and not w.proc.is_alive()):
                    self._read_if_ready(w)  # it may have sent its result just before
                    w.proc.join(1)
                    code = w.proc.exitcode
                    self.workers.pop(w.index)
                    w.conn.close()
                    self._workers_changed = True
                    if self._task_dirs:
                        self._left_behind(w.proc.pid)
                    self._run(WorkerDied(w.index, code, time.time()))

    def _left_behind(self, pid: int) -> None:
        """A worker died in the middle of a task: its folder is the manager's to clean."""
        assert self._task_dirs is not None
        kept = after_worker(self._task_dirs, pid, keep=self._task_dirs.keep_on_failure)
        for path in kept:
            log.warning("task_dir: a worker died in the middle of a task; its folder is "
                        "kept at %s", path)

    def _read(self, w: WorkerProcess) -> None:
        try:
            frame = w.conn.recv_bytes()
        except (EOFError, OSError):
            return  # dead; the sentinel handles it
        msg = self._worker_decoder.decode(frame)
        assert isinstance(msg, m.Results)
        self._run(WorkerResults(w.index, msg.results, time.time()))

    def _read_if_ready(self, w: WorkerProcess) -> None:
        try:
            if w.conn.poll(0):
                self._read(w)
        except (EOFError, OSError):
            pass

    def feed(self) -> None:
        """Put queued tasks into the workers' pipes (the inline loop, right after the
        interchange's turn handed it tasks; the process loop does it in ``step``). Called
        every turn of the agent's loop: with nothing queued there is nothing to decide."""
        if self.state.queue:
            self._run(Feed(time.time()))

    def step(self) -> None:
        """The turn: feed the workers, tell the interchange what happened, beat, and
        mind its silence."""
        now = time.monotonic()
        silent = now - self.last_heard
        if silent > self.opts.heartbeat_threshold_s and not self.state.stopping:
            log.error("no word from the interchange for %.0fs: stopping", silent)
            self.stop("the interchange went silent")
        self._run(Tick(time.time()))
        if now - self.last_sent >= self.opts.heartbeat_period_s:
            self._send(m.Heartbeat(sent_at=time.time()))

    # ----------------------------------------------------------------- run --

    def run(self) -> int:
        """The manager's own loop, as a process on a node."""
        assert self.sock is not None
        self.start()
        poller = zmq.Poller()
        try:
            state = self.state
            while not state.stopping:
                if self._workers_changed:
                    poller = zmq.Poller()
                    poller.register(self.sock, zmq.POLLIN)
                    for fd in self.poll_fds():
                        poller.register(fd, zmq.POLLIN)
                events = dict(poller.poll(self.poll_ms()))
                if state.stopping:  # SIGTERM arrived: the pilot ends; leave it to Bye
                    break
                if self.sock in events:
                    self._receive()
                self.on_events(events)
                self.step()
        finally:
            self.shutdown()
        return 0

    def _receive(self) -> None:
        assert self.sock is not None
        while True:
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self.deliver(self._decoder.decode(frame))
            except ProtocolError as exc:
                log.warning("dropped a bad message: %s", exc)
            except Exception:  # mishandled, but the node's workers go on
                log.exception("error while handling a message; dropped it")

    def shutdown(self) -> None:
        """Kill the workers, report what is left, and say goodbye."""
        instructions = self.state.handle(Closing(time.time()))
        for w in self.workers.values():  # all at once, then wait for each
            if w.proc.is_alive():
                w.proc.kill()
        with contextlib.suppress(zmq.ZMQError):
            for ins in instructions:
                if isinstance(ins, KillWorker):
                    self._kill_worker(ins.worker, join_s=5)
                elif isinstance(ins, Send):
                    self._send(ins.msg)
        if self.sock is not None and self._ctx is not None:
            self.sock.close(linger=500)
            self._ctx.term()
        if self._pool_file is not None:
            self._pool_file.unlink(missing_ok=True)
        if self.opts.container is not None:
            remove_containers(self.opts.container, self._container_prefix)


def _node() -> Node:
    return Node(hostname=socket.gethostname(), cores=os.cpu_count() or 1, gpus=_count_gpus(),
                python_version=f"{sys.version_info.major}.{sys.version_info.minor}")


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
    p.add_argument("--options", required=True,
                   help="the manager's options document (JSON; see endpoint/launch.py)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s manager: %(message)s")
    try:
        opts = ManagerOptions.from_json(a.options)
        credentials = (None if opts.credentials is None
                       else ManagerCredentials.load(Path(opts.credentials)))
        if opts.sandbox is not None:
            opts.sandbox.check()  # on this node: bwrap present, the Python not hidden
        if opts.container is not None:
            opts.container.check()  # on this node: the engine and the image
        if opts.task_dir is not None and not (opts.container and opts.container.image):
            opts.task_dir.check()  # on this node: the root exists and is writable
    except ConfigError as exc:
        sys.exit(f"manager: {exc.message}")
    _follow_parent()
    manager = Manager(opts, credentials=credentials)
    signal.signal(signal.SIGTERM, lambda *_: manager.stop("terminated (SIGTERM)"))
    sys.exit(manager.run())


if __name__ == "__main__":
    main()
