"""Endpoint status for open pages: one look at the links per period per process,
shared by every viewer.

While at least one viewer is connected, a task of this process reads the status
of the endpoint links it holds (memory only, no query) every ``period_s`` and,
when something changed, wakes every viewer; each viewer's stream then sends the
part for the endpoints it may see (a set read once when it connected). With
nobody viewing, the task does not run. With replicas, a replica tells of the
links it holds; a page on another replica shows them as of its last reading.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from funcx_flows.service.dispatcher import Dispatcher

PERIOD_S = 2.0


def link_summary(dispatcher: Dispatcher) -> dict[str, dict[str, Any]]:
    out = {}
    for endpoint_id, link in list(dispatcher.links.items()):
        st = link.status
        out[endpoint_id] = {
            "state": "online" if link.online else "offline", "last_seen": link.last_seen,
            "workers_busy": st.workers_busy if st else 0,
            "workers_total": st.workers_total if st else 0,
            "tasks_queued": st.tasks_queued if st else 0,
            "blocks": len(st.blocks) if st else 0}
    return out


class StatusTicker:
    def __init__(self, read: Callable[[], dict[str, dict[str, Any]]],
                 period_s: float = PERIOD_S) -> None:
        self.read = read
        self.period_s = period_s
        self.snapshot: dict[str, dict[str, Any]] = {}
        self.viewers = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def join(self) -> None:
        self.viewers += 1
        if self._task is None:
            self.snapshot = self.read()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def leave(self) -> None:
        self.viewers -= 1
        if self.viewers <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next change (a new event each time: waiters of the old one wake)."""
        return self._changed

    async def _loop(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.period_s)
                now = self.read()
                if now != self.snapshot:
                    self.snapshot = now
                    woken, self._changed = self._changed, asyncio.Event()
                    woken.set()
