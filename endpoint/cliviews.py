"""What ``funcx-endpoint list`` and ``status`` show, from the service's answer and the
endpoint's own ``status.json``: pure functions, so that each rule has a test.

Two rules keep the views honest:
- ``online`` means the link is up, not that tasks can run: an endpoint whose blocks
  all failed (a queue that refuses the job, a bad launcher) is online with no
  capacity, and ``list`` says so;
- a failed block is shown once, in the blocks table, not again among the recent
  errors that the agent also records for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LIVE_BLOCK_STATES = frozenset({"pending", "running"})


def service_state(state: str, status: Mapping[str, Any] | None) -> str:
    """The service's state of an endpoint, told more exactly where the endpoint's
    local status shows that an online endpoint has no workers."""
    if state != "online" or not status or status.get("workers_total", 0) > 0:
        return state
    blocks: Sequence[Mapping[str, Any]] = status.get("blocks") or []
    if any(b.get("state") == "pending" for b in blocks):
        return "online, starting a block"
    if any(b.get("state") in LIVE_BLOCK_STATES for b in blocks):
        return state  # a block is up and its workers are about to register
    failed = [b for b in blocks if b.get("state") == "failed"]
    if failed:
        why = (failed[-1].get("message") or "").splitlines()[0][:60] if \
            failed[-1].get("message") else ""
        return f"online, no capacity (block {failed[-1].get('block_id')} failed" + \
            (f": {why})" if why else ")")
    return "online, no workers (blocks start on demand)"


def errors_not_shown(status: Mapping[str, Any]) -> list[str]:
    """The recent errors that the blocks table does not already show."""
    shown = [f"block {b['block_id']} " for b in status.get("blocks") or []
             if b.get("message") and b.get("block_id")]
    return [e for e in status.get("recent_errors") or []
            if not any(prefix in e for prefix in shown)]
