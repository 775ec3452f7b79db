"""Simulated managers around a real interchange, for scale benchmarks and tests.

A simulated manager speaks the manager's side of the wire (``ManagerRegister``,
``Ready`` credits, ``Results`` with ``free`` riding along, heartbeats, ``Bye``)
but runs no workers: it answers every task at once. One process holds many of
them, each its own DEALER socket and routing id, so thousands of worker slots
fit on a laptop. ``InterchangeHost`` runs a real ``Interchange`` thread the way
the agent does (an inproc PAIR in the same process) and ``feed`` pushes task
batches through it, counting what comes back::

    InterchangeHost (this process)       python tests/simulated.py (a few processes)
    feed --Tasks--> PAIR inproc --> Interchange --ROUTER tcp--> N x DEALER "manager"
         <--Results, EndpointStatus--            <--Results(free=n), at once--

A test and benchmark harness, outside the product package: nothing here is used by
a running endpoint. ``InterchangeHost`` drives the interchange with the calls the
agent's loop makes, in its order (``submit``/``cancel``, ``on_readable``, ``turn``,
``take``); only the feeder in front of it differs (a PAIR instead of the service).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import zmq

from funcx_flows import messages as m
from funcx_flows.endpoint.interchange import Interchange


def manager_register(manager_id: str, workers: int, hostname: str = "simulated",
                     block_id: str = "simulated") -> m.ManagerRegister:
    """The first message of a manager with ``workers`` slots."""
    return m.ManagerRegister(manager_id=manager_id, hostname=hostname, block_id=block_id,
                             workers=workers, cores=1, python_version="3.11")


def task_id(index: int) -> str:
    """Task ids look like the service's (uuid strings) and map back to an index.

    (Formatted by hand: ``str(uuid.UUID(int=i))`` costs the feeder more than the
    interchange spends on a task.)"""
    h = f"{index:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def task_index(tid: str) -> int:
    return int(tid.replace("-", ""), 16)


# ------------------------------------------------------------- managers --

@dataclass
class _Simulated:
    manager_id: str
    sock: zmq.Socket[bytes]
    answered: int = 0
    last_sent: float = 0.0
    done: bool = False


def serve_managers(url: str, manager_ids: list[str], slots: int, *, stop_fd: int,
                   prefetch: int = 0, heartbeat_period_s: float = 2.0,
                   result: bytes = b"") -> dict[str, int]:
    """Run simulated managers until ``stop_fd`` is readable (or all are shut down);
    return the number of tasks each answered.

    Each registers, grants ``slots + prefetch`` credits, and answers each batch of
    tasks with one ``Results`` that returns as many credits, as the real manager
    does; it says ``Bye`` when the simulation ends.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.max_sockets = max(ctx.max_sockets, len(manager_ids) + 16)
    decoder = m.Decoder(m.INTERCHANGE_TO_MANAGER)
    sims: dict[zmq.Socket[bytes], _Simulated] = {}
    poller = zmq.Poller()
    poller.register(stop_fd, zmq.POLLIN)
    any_live = True
    try:
        for mid in manager_ids:
            sock = ctx.socket(zmq.DEALER)
            sock.routing_id = mid.encode()
            sock.linger = 0
            sock.sndhwm = 0
            sock.rcvhwm = 0
            sock.connect(url)
            sock.send(m.encode(manager_register(mid, slots)))
            sock.send(m.encode(m.Ready(free=slots + prefetch)))
            sims[sock] = _Simulated(mid, sock, last_sent=time.monotonic())
            poller.register(sock, zmq.POLLIN)
        stopping = False
        next_beats = time.monotonic()
        while not stopping and any_live:
            events = dict(poller.poll(int(heartbeat_period_s * 500)))
            for what in events:
                if isinstance(what, int):
                    stopping = True  # told to stop, or the parent went away (EOF)
                elif (sim := sims.get(what)) is not None:
                    _answer(sim, decoder, result)
            now = time.monotonic()
            if now >= next_beats:  # (a walk over thousands of sockets: not every turn)
                next_beats = now + heartbeat_period_s / 4
                any_live = False
                for sim in sims.values():
                    any_live = any_live or not sim.done
                    if not sim.done and now - sim.last_sent >= heartbeat_period_s:
                        sim.sock.send(m.encode(m.Heartbeat(sent_at=time.time())))
                        sim.last_sent = now
        for sim in sims.values():
            if not sim.done:
                sim.sock.send(m.encode(m.Bye(reason="simulation ends")))
    finally:
        for sock in sims:
            sock.close(linger=200)
        ctx.term()
    return {s.manager_id: s.answered for s in sims.values()}


def fleet_ids(managers: int, index: int = 0, procs: int = 1) -> list[str]:
    """The ids of process ``index`` of ``procs`` in a fleet of ``managers``."""
    return [f"sim-{i:05d}" for i in range(index, managers, procs)]


def _answer(sim: _Simulated, decoder: m.Decoder, result: bytes) -> None:
    while True:
        try:
            frame = sim.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        msg = decoder.decode(frame)
        if isinstance(msg, m.Tasks):
            now = time.time()
            sim.sock.send(m.encode(m.Results(results=[
                m.TaskResult(task_id=t.task_id, ok=True, data=result, started_at=now,
                             finished_at=now, attempts=t.attempt + 1)
                for t in msg.tasks], free=len(msg.tasks))), copy=False)
            sim.answered += len(msg.tasks)
            sim.last_sent = time.monotonic()
        elif isinstance(msg, m.Shutdown):
            sim.done = True


@dataclass
class ManagerFleet:
    """``managers`` simulated managers of ``slots`` each, spread over ``procs`` processes.

    Each process is ``python tests/simulated.py``, started as the
    agent starts real managers; it stops when its stdin says so or closes, and
    prints how many tasks each of its managers answered.
    """

    url: str
    managers: int
    slots: int
    procs: int = 2
    prefetch: int = 0
    heartbeat_period_s: float = 2.0
    result: bytes = b""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def manager_ids(self) -> list[str]:
        return fleet_ids(self.managers)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def start(self) -> ManagerFleet:
        procs = max(1, min(self.procs, self.managers))
        for index in range(procs):
            self.processes.append(subprocess.Popen(
                [sys.executable, __file__, "--interchange", self.url,
                 "--managers", str(self.managers), "--index", str(index), "--procs", str(procs),
                 "--slots", str(self.slots), "--prefetch", str(self.prefetch),
                 "--heartbeat-period", str(self.heartbeat_period_s),
                 "--result-hex", self.result.hex()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        return self

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        """Stop every process; the tasks each manager answered (of those that told)."""
        answered: dict[str, int] = {}
        for proc in self.processes:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # already gone
                    proc.stdin.write(b"stop\n")
                    proc.stdin.close()
                proc.stdin = None  # told (or gone): communicate() leaves it alone
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                continue
            with contextlib.suppress(ValueError):
                answered.update(json.loads(out or b"{}"))
        self.processes.clear()
        return answered

    def __enter__(self) -> ManagerFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------- the agent side --

class InterchangeHost:
    """A real interchange driven by a thread of its own, as the agent's loop drives
    it, and fed over an inproc PAIR (tasks in; results, states, status out)."""

    def __init__(self, *, heartbeat_period_s: float = 2.0, heartbeat_threshold_s: float = 10.0,
                 max_retries: int = 0) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        url = f"inproc://interchange-{uuid.uuid4().hex[:8]}"
        self.pair, self._inner = (self.ctx.socket(zmq.PAIR), self.ctx.socket(zmq.PAIR))
        for sock in (self.pair, self._inner):
            sock.linger = 0
            sock.sndhwm = 0
            sock.rcvhwm = 0
        self.pair.bind(url)
        self._inner.connect(url)
        self.interchange = Interchange(
            self.ctx, "127.0.0.1", max_retries=max_retries,
            heartbeat_period_s=heartbeat_period_s, heartbeat_threshold_s=heartbeat_threshold_s)
        self.url = f"tcp://127.0.0.1:{self.interchange.port}"
        self.status = m.EndpointStatus()
        self._decoder = m.Decoder(m.INTERCHANGE_TO_AGENT)
        self.thread = threading.Thread(target=self._drive, name="interchange", daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        ix, inner = self.interchange, self._inner
        decoder = m.Decoder(m.AGENT_TO_INTERCHANGE)
        poller = zmq.Poller()
        poller.register(inner, zmq.POLLIN)
        poller.register(ix.sock, zmq.POLLIN)
        stopping = False
        try:
            while not stopping:
                events = dict(poller.poll(ix.poll_ms))
                for _ in range(16 if inner in events else 0):  # bites, as the agent takes
                    try:
                        msg = decoder.decode(inner.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    if isinstance(msg, m.Tasks):
                        ix.submit(msg.tasks)
                    elif isinstance(msg, m.Cancel):
                        ix.cancel(msg.task_ids)
                    elif isinstance(msg, m.Shutdown):
                        stopping = True
                if ix.sock in events:
                    ix.on_readable()
                ix.turn()
                results, states, status = ix.take()
                for out in (m.TaskStates(states=states) if states else None,
                            m.Results(results=results) if results else None, status):
                    if out is not None:
                        inner.send(m.encode(out), copy=False)
        finally:
            ix.close()
            inner.close()

    @property
    def thread_native_id(self) -> int | None:
        native: int | None = self.thread.native_id
        return native

    def send(self, msg: m.Message) -> None:
        self.pair.send(m.encode(msg), copy=False)

    def receive(self, timeout_s: float) -> Iterator[m.Message]:
        """What the interchange sent, waiting up to ``timeout_s`` for the first."""
        if not self.pair.poll(int(timeout_s * 1000)):
            return
        for _ in range(1000):
            try:
                frame = self.pair.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = self._decoder.decode(frame)
            if isinstance(msg, m.EndpointStatus):
                self.status = msg
            yield msg

    def wait_for_slots(self, managers: int, slots: int, timeout_s: float = 60.0) -> None:
        """Until the interchange reports that many managers and worker slots."""
        deadline = time.monotonic() + timeout_s
        while (self.status.managers_total < managers
               or self.status.workers_total < slots):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the interchange sees {self.status.managers_total} managers and "
                    f"{self.status.workers_total} slots after {timeout_s:.0f}s; "
                    f"expected {managers} and {slots}")
            for _ in self.receive(0.2):
                pass

    def close(self) -> None:
        if self.thread.is_alive():
            self.send(m.Shutdown(reason="simulation ends"))
            self.thread.join(10)
        self.pair.close()
        self.ctx.term()

    def __enter__(self) -> InterchangeHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FeedReport:
    """What came back for ``n`` tasks fed through an interchange."""

    n: int
    counts: array.array[int]  # results per task index
    elapsed_s: float = 0.0  # first task sent to the last first-result received
    failed: int = 0
    bucket_s: float = 0.1
    per_bucket: list[int] = field(default_factory=list)  # first results per bucket
    max_managers_seen: int = 0
    max_slots_seen: int = 0
    stalled: bool = False

    @property
    def received(self) -> int:
        return sum(1 for c in self.counts if c)

    @property
    def missing(self) -> int:
        return self.counts.count(0)

    @property
    def duplicates(self) -> int:
        return sum(c - 1 for c in self.counts if c > 1)

    @property
    def tasks_per_s(self) -> float:
        return self.n / self.elapsed_s if self.elapsed_s else 0.0


def noop_spec_factory(function: bytes, payload: bytes) -> Callable[[int], m.TaskSpec]:
    def make(i: int) -> m.TaskSpec:
        return m.TaskSpec(task_id=task_id(i), function_id="noop", function=function,
                          payload=payload)
    return make


def feed(host: InterchangeHost, n: int, make: Callable[[int], m.TaskSpec], *,
         batch: int = 512, window: int = 0, settle_s: float = 0.5, stall_s: float = 30.0,
         progress: Callable[[FeedReport, int], None] | None = None,
         stop: threading.Event | None = None) -> FeedReport:
    """Send ``n`` tasks in ``Tasks`` batches (as the agent forwards the service's),
    at most ``window`` unanswered at a time (0: no limit), and count the results
    until each task has one (then ``settle_s`` more, to catch duplicates).
    """
    report = FeedReport(n=n, counts=array.array("I", bytes(4 * n)),
                        max_managers_seen=host.status.managers_total,
                        max_slots_seen=host.status.workers_total)
    counts = report.counts
    sent = received = 0
    t0 = time.monotonic()
    last_progress = last_result = t0
    done_at: float | None = None
    while stop is None or not stop.is_set():
        while sent < n and (not window or sent - received < window):
            k = min(batch, n - sent)
            host.send(m.Tasks(tasks=[make(i) for i in range(sent, sent + k)]))
            sent += k
        now = time.monotonic()
        if done_at is not None and now - done_at >= settle_s:
            break
        if now - last_result > stall_s:
            report.stalled = True
            break
        for msg in host.receive(0.05):
            if isinstance(msg, m.Results):
                now = time.monotonic()
                bucket = int((now - t0) / report.bucket_s)
                per_bucket = report.per_bucket
                if len(per_bucket) <= bucket:
                    per_bucket.extend([0] * (bucket + 1 - len(per_bucket)))
                for r in msg.results:
                    i = task_index(r.task_id)
                    if counts[i] == 0:
                        received += 1
                        per_bucket[bucket] += 1
                    counts[i] += 1
                    if not r.ok:
                        report.failed += 1
                last_result = now
                if received == n and done_at is None:
                    done_at = now
                    report.elapsed_s = now - t0
            elif isinstance(msg, m.EndpointStatus):
                report.max_managers_seen = max(report.max_managers_seen, msg.managers_total)
                report.max_slots_seen = max(report.max_slots_seen, msg.workers_total)
        if progress is not None and time.monotonic() - last_progress >= 1.0:
            last_progress = time.monotonic()
            progress(report, received)
    if done_at is None:
        report.elapsed_s = time.monotonic() - t0
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python tests/simulated.py",
                                description="Simulated managers; stop them with a line on stdin.")
    p.add_argument("--interchange", required=True)
    p.add_argument("--managers", type=int, required=True, help="managers in the whole fleet")
    p.add_argument("--index", type=int, default=0, help="which process of the fleet this is")
    p.add_argument("--procs", type=int, default=1, help="processes in the fleet")
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--prefetch", type=int, default=0)
    p.add_argument("--heartbeat-period", type=float, default=2.0)
    p.add_argument("--result-hex", default="", help="the result payload every task returns")
    a = p.parse_args(argv)
    answered = serve_managers(
        a.interchange, fleet_ids(a.managers, a.index, a.procs), a.slots,
        stop_fd=sys.stdin.fileno(), prefetch=a.prefetch, heartbeat_period_s=a.heartbeat_period,
        result=bytes.fromhex(a.result_hex))
    sys.stdout.write(json.dumps(answered))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
