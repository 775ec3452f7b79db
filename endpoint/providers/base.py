"""What the agent needs from a provider of blocks (pilot jobs).

A *block* is one scheduler job of ``nodes_per_block`` nodes; on each node it
runs a manager that dials back to the interchange. A provider submits blocks,
reports their states, and cancels them. It never blocks the agent for long:
``poll`` answers from its latest view and refreshes that view at its own pace.
"""

from __future__ import annotations

import time
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


class Provider(Protocol):
    """``command`` is the shell command that starts a manager on one node."""

    def submit(self, block_id: str, command: str) -> Block: ...

    def poll(self) -> list[Block]: ...

    def cancel(self, block_ids: list[str]) -> None: ...

    def close(self) -> None: ...
