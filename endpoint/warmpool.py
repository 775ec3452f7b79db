"""Warm containers for tasks that ask for an image of their own: the pool's policy.

A task submitted with ``resources={"container_image": IMAGE}`` runs in a worker
inside a container of IMAGE, on an endpoint with a container engine
(``container: {type: podman}``). Starting a container costs about a second, so
the manager keeps the containers it started, idle, for the next task of the same
image: per node at most ``container.max_warm`` of them, over all images. A task
goes to

    1. an idle worker of its image (the most recently used: the others age, and
       are the first to go);
    2. else a new worker of its image, if fewer than ``max_warm`` are alive;
    3. else a new worker of its image in place of the least recently used idle
       worker (of another image), which is stopped;
    4. else (all busy) it waits, and later tasks whose image has an idle worker
       pass it.

A worker of the pool runs one task at a time (nothing waits in its pipe: a task
waiting there could not move to another image's worker). Tasks without an image
never come here: the manager's own workers run them, as before (the endpoint's
``container.image``, or forked on the host when it is blank).

This is pure: ``ManagerState`` hands the pool what happened and carries the
instructions it appends (StartWorker with the image, KillWorker, ToWorker) to the
shell, which starts the containers (container.py). When the engine has no such
image the shell says so (``not_started``) instead of starting one, and the task
fails with a ``ContainerError`` naming the image.

Invariants (tests/unit/endpoint/test_warmpool.py drives random events against
them): never more than ``max_warm`` live workers; a task only ever runs in a
worker of its image; a worker stopped for another image is the least recently
used idle one; every task taken is answered once or still held.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from funcx_flows import messages as m
from funcx_flows.endpoint.manager_state import Instruction, KillWorker, StartWorker, ToWorker
from funcx_flows.errors import ContainerError, WorkerLost


@dataclass(slots=True)
class WarmWorker:
    index: int
    image: str
    task: m.TaskSpec | None = None  # the task it runs (None: idle)
    used: int = 0  # the pool's count when it last took or finished a task


def image_of(spec: m.TaskSpec) -> str | None:
    """The image a task asks for (None: the manager's own workers run it)."""
    r = spec.resources
    return None if r is None else r.container_image


class WarmPool:
    def __init__(self, limit: int, first_index: int) -> None:
        """``first_index``: the pool's workers are numbered from it up, never reused
        (the manager's own are 0 .. workers-1)."""
        self.limit = limit
        self.next_index = first_index
        self.workers: dict[int, WarmWorker] = {}
        self.queue: collections.deque[m.TaskSpec] = collections.deque()
        self.uses = 0

    # ------------------------------------------------------------- queries --

    def held(self) -> int:
        return len(self.queue) + sum(1 for w in self.workers.values() if w.task is not None)

    def idle_lru(self) -> WarmWorker | None:
        """The least recently used idle worker (the one to stop for another image)."""
        idle = [w for w in self.workers.values() if w.task is None]
        return min(idle, key=lambda w: w.used) if idle else None

    # ------------------------------------------------------------- events --

    def take(self, specs: list[m.TaskSpec]) -> list[m.TaskSpec]:
        """Keep the tasks that ask for an image; the others, in order."""
        others = []
        for spec in specs:
            if image_of(spec) is None:
                others.append(spec)
            else:
                self.queue.append(spec)
        return others

    def feed(self, out: list[Instruction]) -> list[m.TaskSpec]:
        """Place what waits (see the module's rules); the tasks that started."""
        if not self.queue:
            return []
        placed, waiting = [], collections.deque[m.TaskSpec]()
        for spec in self.queue:
            image = image_of(spec)
            assert image is not None
            idle = [w for w in self.workers.values() if w.task is None and w.image == image]
            if idle:
                w = max(idle, key=lambda w: w.used)
            else:
                if len(self.workers) >= self.limit:
                    lru = self.idle_lru()
                    if lru is None:
                        waiting.append(spec)
                        continue
                    del self.workers[lru.index]
                    out.append(KillWorker(lru.index))
                w = WarmWorker(self.next_index, image)
                self.next_index += 1
                self.workers[w.index] = w
                out.append(StartWorker(w.index, image))
            self.uses += 1
            w.task, w.used = spec, self.uses
            out.append(ToWorker(w.index, m.encode(m.Tasks(tasks=[spec]))))
            placed.append(spec)
        self.queue = waiting
        return placed

    def finished(self, worker: int, results: list[m.TaskResult]) -> list[m.TaskResult]:
        """A worker's results: those of its task (it is idle again)."""
        w = self.workers.get(worker)
        if w is None or w.task is None:
            return []
        mine = [r for r in results if r.task_id == w.task.task_id]
        if mine:
            self.uses += 1
            w.task, w.used = None, self.uses
        return mine[:1]

    def lost(self, worker: int, why: str, now: float, *, code: str = WorkerLost.code
             ) -> m.TaskResult | None:
        """A worker is gone (it died, or was never started: ``why``); the failure of
        the task it ran, if any."""
        w = self.workers.pop(worker, None)
        if w is None or w.task is None:
            return None
        spec = w.task
        return m.TaskResult(task_id=spec.task_id, ok=False, attempts=spec.attempt + 1,
                            finished_at=now, error=m.ErrorInfo(code=code, message=why))

    def not_started(self, worker: int, why: str, now: float) -> list[m.TaskResult]:
        """The engine could not start the worker's image: its task fails naming it,
        and so do those waiting for the same image (a task that comes later tries
        again: the image may have been pulled since)."""
        w = self.workers.get(worker)
        if w is None:
            return []
        image, failed = w.image, []
        lost = self.lost(worker, why, now, code=ContainerError.code)
        if lost is not None:
            failed.append(lost)
        waiting: collections.deque[m.TaskSpec] = collections.deque()
        for spec in self.queue:
            if image_of(spec) == image:
                failed.append(m.TaskResult(
                    task_id=spec.task_id, ok=False, attempts=spec.attempt + 1,
                    finished_at=now, error=m.ErrorInfo(code=ContainerError.code, message=why)))
            else:
                waiting.append(spec)
        self.queue = waiting
        return failed

    def died(self, worker: int, exitcode: int | None, hostname: str, now: float
             ) -> m.TaskResult | None:
        w = self.workers.get(worker)
        if w is None:
            return None
        how = (f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
               else f"exited with code {exitcode}")
        return self.lost(worker, f"the worker in a container of image {w.image!r} ended "
                                 f"({how}) on {hostname} before its task did (does the "
                                 "image hold Python with funcx-flows?)", now)

    def cancel(self, wanted: set[str], now: float, out: list[Instruction]
               ) -> list[m.TaskResult]:
        """Cancelled tasks: those waiting end here; a running one's worker is stopped."""
        ended = []
        for w in list(self.workers.values()):
            if w.task is not None and w.task.task_id in wanted:
                out.append(KillWorker(w.index))
                del self.workers[w.index]
                ended.append(m.cancelled_result(w.task, now))
        kept: collections.deque[m.TaskSpec] = collections.deque()
        for spec in self.queue:
            if spec.task_id in wanted:
                ended.append(m.cancelled_result(spec, now))
            else:
                kept.append(spec)
        self.queue = kept
        return ended

    def close(self, out: list[Instruction]) -> None:
        """The manager stops: every container goes (their tasks go back with Bye)."""
        for index in self.workers:
            out.append(KillWorker(index))
        self.workers.clear()
        self.queue.clear()
