"""The block scaler: a thread that asks the provider for blocks (pilot jobs).

A scheduler's commands (sbatch, squeue...) can take seconds and must not hold up
tasks, so the scaler runs beside the agent's loop, every ``strategy_period``. The
two share nothing that either writes: each datum has one owner, and what
crosses between them is immutable::

    agent loop                                           scaler thread (every strategy_period)
    ----------                                           -------------------------------------
    held tasks, status  --post(LoopSnapshot)-------->    latest snapshot
                                                         provider.poll() -> blocks, failures,
                                                           idle_since (its own)
                                                         strategy.decide(Inputs) -> submit/cancel
    status.blocks       <--report: ScalerReport------    (a frozen tuple of BlockRecord)
    recent errors       <--notes: SimpleQueue[str]---    a block failed, a submission refused

``post`` and ``report`` swap one reference each (atomic in Python); the notes
queue is thread-safe. The provider is the scaler's alone once it runs (an inline
provider also answers the loop, under its own lock).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from funcx_flows import messages as m
from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.launch import DEFAULT_MAX_RESULT_BYTES, LaunchPlan
from funcx_flows.endpoint.providers.base import (
    ACTIVE_STATES,
    CANCELLED,
    ENDED,
    FAILED,
    Block,
    Provider,
)
from funcx_flows.endpoint.strategy import Actions, BlockView, Inputs
from funcx_flows.endpoint.strategy import decide as strategy_decide

log = logging.getLogger(__name__)

FAILURE_MEMORY_S = 3600.0  # failed starts older than this no longer slow submissions
LISTED_BLOCKS = 20  # the newest blocks in the status
LISTED_REFUSED = 5  # the newest refused submissions in the status


@dataclass(frozen=True)
class BlockLoadView:
    block_id: str
    workers: int
    busy: int


class LoopSnapshot(NamedTuple):
    """What the loop knows that the scaler decides by, as of one moment (a named
    tuple: immutable, and made in ~0.2 us where a frozen dataclass takes ~0.9; the
    loop posts one whenever the held tasks change)."""

    tasks_held: int = 0  # tasks the agent took from the service and has not answered
    tasks_queued: int = 0  # at the interchange (from the last status)
    tasks_running: int = 0
    block_load: tuple[BlockLoadView, ...] = ()
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # the service's, for new managers

    @staticmethod
    def load_of(status: m.EndpointStatus) -> tuple[BlockLoadView, ...]:
        return tuple(BlockLoadView(b.block_id, b.workers, b.busy) for b in status.block_load)


@dataclass(frozen=True)
class BlockRecord:
    """One block as the status shows it."""

    block_id: str
    job_id: str
    state: str
    nodes: int
    submitted_at: float
    message: str

    @staticmethod
    def of(b: Block) -> BlockRecord:
        return BlockRecord(b.block_id, b.job_id, b.state, b.nodes, b.submitted_at, b.message)


@dataclass(frozen=True)
class ScalerReport:
    """What the scaler saw: the refused submissions, then the newest blocks."""

    blocks: tuple[BlockRecord, ...] = ()


def inputs(config: EndpointConfig, snap: LoopSnapshot, blocks: list[Block],
           idle_since: dict[str, float | None], failures: list[float], now: float) -> Inputs:
    """The strategy's inputs from what the scaler knows; see ``strategy.decide``."""
    c = config
    load = {b.block_id: b for b in snap.block_load}
    views = tuple(BlockView(b.block_id, b.state,
                            load[b.block_id].workers if b.block_id in load else 0,
                            load[b.block_id].busy if b.block_id in load else 0,
                            idle_since.get(b.block_id))
                  for b in blocks if b.active)
    waiting = max(snap.tasks_queued, snap.tasks_held - snap.tasks_running)
    return Inputs(
        now=now, tasks_waiting=waiting, blocks=views, min_blocks=c.min_blocks,
        max_blocks=c.max_blocks,
        workers_per_block=c.max_workers_per_node * c.nodes_per_block,
        idle_timeout=c.idle_timeout,
        failures=tuple(t for t in failures if now - t < FAILURE_MEMORY_S))


class BlockScaler:
    def __init__(self, provider: Provider, config: EndpointConfig, launch: LaunchPlan,
                 decide: Callable[[Inputs], Actions] = strategy_decide,
                 clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.config = config
        self.launch = launch
        self.decide = decide
        self.clock = clock  # wall-clock seconds: block times are shown to people
        self.notes: queue.SimpleQueue[str] = queue.SimpleQueue()  # scaler -> loop
        self._snapshot = LoopSnapshot()  # loop -> scaler (replaced, never changed)
        self._report = ScalerReport()  # scaler -> loop (replaced, never changed)
        # the scaler's own
        self.blocks: list[Block] = []
        self.block_failures: list[float] = []  # when starts failed
        self.refused: list[Block] = []  # submissions the scheduler refused
        self.idle_since: dict[str, float | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scaler", daemon=True)

    # --------------------------------------------------------- the loop's --

    def post(self, snapshot: LoopSnapshot) -> None:
        self._snapshot = snapshot

    @property
    def report(self) -> ScalerReport:
        return self._report

    def start(self) -> None:
        """The first ``init_blocks``, then the thread (the caller's thread submits
        them: the endpoint starts with its blocks asked for)."""
        self.submit_blocks(self.config.init_blocks)
        self.blocks = self.provider.poll()
        self._publish()
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)  # a scheduler command may be under way

    # ------------------------------------------------------- the scaler's --

    def _run(self) -> None:
        """Every ``strategy_period`` seconds: one ``step``, whatever it raises."""
        while not self._stop.wait(self.config.strategy_period):
            try:
                self.step()
            except Exception as exc:  # a scheduler's hiccup must not end scaling
                log.exception("the scaling strategy failed; trying again next period")
                self.notes.put(f"scaling failed: {type(exc).__name__}: {exc}"[:300])

    def step(self) -> Actions:
        """Poll the provider, note what changed, decide, act; the report follows."""
        try:
            before = {b.block_id: b.state for b in self.blocks}
            self.blocks = self.provider.poll()
            for b in self.blocks:
                if b.state == FAILED and before.get(b.block_id) != FAILED:
                    self.block_failures.append(self.clock())
                    self.notes.put(f"block {b.block_id} failed: {b.message[:300]}")
                elif b.state in (ENDED, CANCELLED) and before.get(b.block_id) in ACTIVE_STATES:
                    log.info("block %s %s", b.block_id, b.state)
            snap = self._snapshot
            self._track_idle(snap)
            actions = self.decide(inputs(self.config, snap, self.blocks, self.idle_since,
                                         self.block_failures, self.clock()))
            if actions.cancel:
                log.info("releasing blocks %s: %s", ", ".join(actions.cancel), actions.reason)
                self.provider.cancel(list(actions.cancel))
            if actions.submit > 0:
                log.info("submitting %d block(s): %s", actions.submit, actions.reason)
                self.submit_blocks(actions.submit)
            return actions
        finally:
            self._publish()

    def submit_blocks(self, n: int) -> None:
        for _ in range(n):
            block_id = uuid.uuid4().hex[:8]
            options = self.launch.options(block_id, self._snapshot.max_result_bytes,
                                          self.clock())
            try:
                block = self.provider.submit(block_id, options.command())
            except Exception as exc:  # the scheduler refused: record, show, back off
                msg = f"{type(exc).__name__}: {exc}".strip()
                log.error("could not submit block %s: %s", block_id, msg)
                self.block_failures.append(self.clock())
                self.refused = [*self.refused[1 - LISTED_REFUSED:], Block(
                    block_id=block_id, state=FAILED, message=msg[:1000],
                    nodes=self.config.nodes_per_block)]
                self.notes.put(f"block {block_id} could not start: {msg[:300]}")
                return
            log.info("submitted block %s (job %s)", block.block_id, block.job_id)

    def _track_idle(self, snap: LoopSnapshot) -> None:
        now = self.clock()
        busy = {b.block_id: b.busy for b in snap.block_load}
        for b in self.blocks:
            if not b.active:
                self.idle_since.pop(b.block_id, None)
            elif busy.get(b.block_id, 0) > 0:
                self.idle_since[b.block_id] = None
            elif self.idle_since.get(b.block_id) is None:
                self.idle_since[b.block_id] = now

    def _publish(self) -> None:
        self._report = ScalerReport(tuple(
            BlockRecord.of(b) for b in [*self.refused, *self.blocks[-LISTED_BLOCKS:]]))
