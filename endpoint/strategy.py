"""The scaling strategy, pure: from what the endpoint sees to what it should do.

Scale out when tasks wait and no block is already coming; scale in blocks whose
workers have all been idle past ``idle_timeout``; never above ``max_blocks``,
never under ``min_blocks``; after blocks that failed to start, back off
(exponentially, capped) instead of submitting in a loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BlockView:
    block_id: str
    state: str  # pending | running (only active blocks are given)
    workers: int = 0  # workers its managers registered (0 while starting)
    busy: int = 0
    idle_since: float | None = None  # when its last task ended (None: busy or never used)


@dataclass(frozen=True)
class Inputs:
    now: float
    tasks_waiting: int  # queued at the interchange plus held but not yet queued
    blocks: tuple[BlockView, ...]
    min_blocks: int
    max_blocks: int
    workers_per_block: int
    idle_timeout: float
    failures: tuple[float, ...] = ()  # times of recent failed block starts
    backoff_base_s: float = 5.0
    backoff_max_s: float = 600.0


@dataclass(frozen=True)
class Actions:
    submit: int = 0
    cancel: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""


def backoff_until(failures: tuple[float, ...], base: float, cap: float) -> float:
    """The time before which no block may be submitted after recent failures."""
    if not failures:
        return -math.inf
    delay = min(cap, base * 2.0 ** (len(failures) - 1))
    return float(max(failures) + delay)


def decide(i: Inputs) -> Actions:
    active = list(i.blocks)
    n = len(active)
    if n < i.min_blocks:
        if i.now < backoff_until(i.failures, i.backoff_base_s, i.backoff_max_s):
            return Actions(reason="below min_blocks, but backing off after failed starts")
        return Actions(submit=min(i.min_blocks, i.max_blocks) - n, reason="min_blocks")
    pending = [b for b in active if b.state == "pending"]
    capacity = sum(max(b.workers, 0) - b.busy for b in active if b.state == "running")
    coming = len(pending) * i.workers_per_block
    if i.tasks_waiting > capacity + coming and n < i.max_blocks:
        if i.now < backoff_until(i.failures, i.backoff_base_s, i.backoff_max_s):
            return Actions(reason="tasks wait, but backing off after failed starts")
        short = i.tasks_waiting - capacity - coming
        want = math.ceil(short / max(i.workers_per_block, 1))
        return Actions(submit=min(want, i.max_blocks - n), reason="tasks waiting")
    if i.tasks_waiting == 0 and n > i.min_blocks:
        idle = sorted((b for b in active if b.state == "running" and b.busy == 0
                       and b.idle_since is not None and i.now - b.idle_since >= i.idle_timeout),
                      key=lambda b: b.idle_since or 0.0)
        excess = n - i.min_blocks
        victims = tuple(b.block_id for b in idle[:excess])
        if victims:
            return Actions(cancel=victims, reason="idle past idle_timeout")
    return Actions()
