"""What the agent needs from a provider of blocks (pilot jobs).

A *block* is one scheduler job of ``nodes_per_block`` nodes; on each node it
runs a manager that dials back to the interchange. A provider submits blocks,
reports their states, and cancels them. It never blocks the agent for long:
``poll`` answers from its latest view and refreshes that view at its own pace.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

PENDING = "pending"
RUNNING = "running"
ENDED = "ended"  # finished on its own (walltime, manager exit)
FAILED = "failed"  # could not start or died with an error
CANCELLED = "cancelled"  # we (or an operator) cancelled it

ACTIVE_STATES = frozenset({PENDING, RUNNING})
FINAL_STATES = frozenset({ENDED, FAILED, CANCELLED})


@dataclass
class Block:
    block_id: str
    nodes: int = 1
    job_id: str = ""  # the scheduler's native id
    state: str = PENDING
    submitted_at: float = field(default_factory=time.time)
    message: str = ""  # the scheduler's reason or the job's stderr when it failed
    walltime_s: float = 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


# Ended blocks a provider still reports (the newest): what an operator looks at
# in the status; older ones are forgotten, or an endpoint that releases and
# submits blocks for months would keep every one it ever had.
KEEP_ENDED = 16


class EndedBlocks:
    """Which ended blocks a provider may forget: only those a ``poll`` answer already
    showed ended (the agent notices a failure by comparing two answers), and all
    but the KEEP_ENDED most recent of them. The caller holds its own lock."""

    def __init__(self) -> None:
        self._reported: dict[str, None] = {}  # ended and reported, oldest first

    def prune(self, blocks: dict[str, Block],
              gone: Callable[[str], bool] = lambda _block_id: True) -> list[str]:
        """Call in ``poll`` once its answer was taken; ``gone``: whether nothing of
        the block is left to watch (a cancelled process may still be ending). Returns
        the forgotten ids, which are deleted from ``blocks``."""
        for block_id, block in blocks.items():
            if not block.active and block_id not in self._reported and gone(block_id):
                self._reported[block_id] = None
        excess = len(self._reported) - KEEP_ENDED
        forgotten = list(itertools.islice(self._reported, max(excess, 0)))
        for block_id in forgotten:
            del self._reported[block_id]
            blocks.pop(block_id, None)
        return forgotten


class Provider(Protocol):
    """``command`` is the shell command that starts a manager on one node."""

    def submit(self, block_id: str, command: str) -> Block: ...

    def poll(self) -> list[Block]: ...

    def cancel(self, block_ids: list[str]) -> None: ...

    def close(self) -> None: ...
