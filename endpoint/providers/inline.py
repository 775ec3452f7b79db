"""Blocks as managers inside the endpoint agent's own loop: no pilot job, no
manager process, no socket between the agent and the workers it feeds.

For a workstation or an instrument's PC, where the agent and the workers share a
host anyway: a task crosses two fewer sockets and one fewer process each way
(docs/benchmarks.md measures it). What it gives up is isolation: the workers are
forked from the agent, and a block ends with it.

The scaler thread calls ``submit``/``cancel``/``poll``; the agent's loop, which
alone touches the managers, asks ``take_requests`` each turn and reports back
with ``ended``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import zmq

from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.interchange import Interchange
from funcx_flows.endpoint.launch import ManagerOptions
from funcx_flows.endpoint.manager import Manager
from funcx_flows.endpoint.providers import base
from funcx_flows.endpoint.providers.base import CANCELLED, ENDED, FAILED, RUNNING, Block

log = logging.getLogger(__name__)


class InlineProvider:
    @classmethod
    def for_endpoint(cls, config: EndpointConfig, log_dir: Path) -> InlineProvider:
        return cls()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[str, Block] = {}
        self._ended = base.EndedBlocks()
        self._to_start: list[str] = []
        self._to_stop: list[str] = []

    def submit(self, block_id: str, command: str) -> Block:
        """``command`` is not run: the agent starts the block's manager in its loop."""
        block = Block(block_id=block_id, job_id="inline", state=RUNNING)
        with self._lock:
            self._blocks[block_id] = block
            self._to_start.append(block_id)
        return block

    def poll(self) -> list[Block]:
        """Copies: the scaler tells changes by comparing with what it saw before."""
        with self._lock:
            answer = [dataclasses.replace(b) for b in self._blocks.values()]
            self._ended.prune(self._blocks)
        return answer

    def cancel(self, block_ids: list[str]) -> None:
        with self._lock:
            for block_id in block_ids:
                block = self._blocks.get(block_id)
                if block is not None and block.active:
                    block.state = CANCELLED
                    self._to_stop.append(block_id)

    def close(self) -> None:
        with self._lock:
            ids = list(self._blocks)
        self.cancel(ids)

    def take_requests(self) -> tuple[list[str], list[str]]:
        """For the agent's loop: blocks to start and blocks to stop since last asked
        (a block cancelled before it started is neither)."""
        with self._lock:
            stop = set(self._to_stop)
            start = [b for b in self._to_start if b not in stop]
            out = start, [b for b in self._to_stop if b not in self._to_start]
            self._to_start, self._to_stop = [], []
        return out

    def ended(self, block_id: str, failure: str = "") -> None:
        """The agent's loop saw the block's manager stop on its own (``failure``:
        why, when it could not go on)."""
        with self._lock:
            block = self._blocks.get(block_id)
            if block is not None and block.active:
                block.state = FAILED if failure else ENDED
                block.message = failure


class InlineManagers:
    """The loop's side: the managers of inline blocks, driven by the agent's poll
    loop (``sync`` and ``update_poller`` before it polls; ``on_events`` after it
    handled the interchange's socket; ``feed`` after the interchange's turn)."""

    def __init__(self, provider: InlineProvider, interchange: Interchange,
                 options: Callable[[str], ManagerOptions]) -> None:
        self.provider = provider
        self.interchange = interchange
        self.options = options  # block id -> the options of its manager
        self.managers: dict[str, Manager] = {}  # block id -> manager
        self.failures: dict[str, str] = {}  # block id -> why its manager had to stop
        self._watched: set[int] = set()

    def sync(self) -> None:
        """Start the blocks the scaler submitted; stop those it cancelled."""
        start, stop = self.provider.take_requests()
        for block_id in start:
            self._start(block_id)
        for block_id in stop:
            mgr = self.managers.get(block_id)
            if mgr is not None:
                mgr.stop("the block was cancelled")
        self._reap()

    def _start(self, block_id: str) -> None:
        opts = self.options(block_id)
        ix = self.interchange
        mgr: Manager
        mgr = Manager(opts, uplink=lambda msg: ix.from_inline(mgr.manager_id, msg))
        ix.attach(mgr.manager_id, lambda msg: self._guard(mgr, mgr.deliver, msg))
        self.managers[block_id] = mgr
        if self._guard(mgr, mgr.start):
            log.info("inline block %s started: manager %s with %d workers", block_id,
                     mgr.manager_id, opts.workers)

    def _guard(self, mgr: Manager, fn: Callable[..., None], *args: Any) -> bool:
        """Run one of a manager's steps; what it raises (a fork that fails for want
        of memory, say) ends that block, not the endpoint."""
        try:
            fn(*args)
        except Exception as exc:
            log.exception("inline block %s failed", mgr.opts.block_id)
            self.failures[mgr.opts.block_id] = f"{type(exc).__name__}: {exc}"[:500]
            mgr.stop("it failed")
            return False
        return True

    def _reap(self) -> None:
        for block_id, mgr in list(self.managers.items()):
            if mgr.stopping:
                self._guard(mgr, mgr.shutdown)  # its Bye reaches the interchange next turn
                self.interchange.detach(mgr.manager_id)
                del self.managers[block_id]
                failure = self.failures.pop(block_id, "")
                self.provider.ended(block_id, failure)
                log.info("inline block %s ended%s", block_id, f": {failure}" if failure else "")

    def update_poller(self, poller: zmq.Poller) -> None:
        """Watch every inline worker's pipe and sentinel (re-registered on a change)."""
        now = {fd for mgr in self.managers.values() for fd in mgr.poll_fds()}
        if now == self._watched:
            return
        for fd in self._watched - now:
            poller.unregister(fd)
        for fd in now - self._watched:
            poller.register(fd, zmq.POLLIN)
        self._watched = now

    def poll_ms(self, default: int) -> int:
        """How long the loop may sleep: not at all while a manager holds results
        (a cancel's, say) or the interchange has their messages still to read."""
        if self.interchange.inline_waiting or any(
                mgr.state.results for mgr in self.managers.values()):
            return 0
        for mgr in self.managers.values():
            default = min(default, mgr.poll_ms())
        return default

    def on_events(self, events: Collection[Any]) -> None:
        """Workers' results and deaths, then each manager's turn (its messages go to
        the interchange's inline queue)."""
        for mgr in self.managers.values():
            if not mgr.stopping and self._guard(mgr, mgr.on_events, events):
                self._guard(mgr, mgr.step)

    def feed(self) -> None:
        """Tasks the interchange just placed go into the workers' pipes at once."""
        for mgr in self.managers.values():
            if not mgr.stopping:
                self._guard(mgr, mgr.feed)

    def close(self) -> None:
        for mgr in self.managers.values():
            mgr.stop("the endpoint is stopping")
        self._reap()
