"""The agent's result outbox: when results leave, and that none is lost on the way.

A result enters from the interchange (``add``), waits a little under load
(``flush`` decides), is sent if the link is up and spooled in any case; it
leaves the spool only when the service acknowledges it (``acked``). After a
reconnect every spooled result goes again (``resend_all``); one sent and not
acknowledged within RESEND_UNACKED_S goes again too (``tick``). A spool that
cannot be written (disk full, read-only) loses nothing either: the results stay
in memory, are sent anyway and spooled again every second until it takes them::

    interchange --add--> waiting --flush--> send (link up) --> service
                                     |                            |
                                     +--> spool <----- acked -----+  (forget)
                                     |    (disk)
                                     +--> unspooled (memory, while the spool fails)
                 reconnect: resend_all | tick (1/s): retry the spool, resend the stale

This is a policy and nothing else: the spool is an interface (``ResultSpool``,
the SQLite one in spool.py), the sending and the clock are handed in, so its
rules are tested without sockets or disks (tests/unit/endpoint/test_outbox.py).
It belongs to the agent's loop thread; nothing else may call it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from funcx_flows import messages as m
from funcx_flows.errors import ResultTooLarge

log = logging.getLogger(__name__)

RESEND_BATCH = 500
RESULTS_HOLD_S = 0.002  # under load, results wait at most this long to leave together
RESULTS_HOLD_MAX = 256
RESEND_UNACKED_S = 10.0  # results sent but not acknowledged this long are sent again


class ResultSpool(Protocol):
    """Where results wait for their acknowledgement (spool.Spool). ``add`` and
    ``remove`` raise sqlite3.Error or OSError having changed nothing."""

    path: Path

    def __contains__(self, task_id: str) -> bool: ...

    def __len__(self) -> int: ...

    @property
    def task_ids(self) -> set[str]: ...

    def add(self, results: list[m.TaskResult]) -> None: ...

    def remove(self, task_ids: Iterable[str]) -> None: ...

    def get(self, task_ids: Iterable[str]) -> list[m.TaskResult]: ...

    def batches(self, size: int = 500) -> Iterator[list[m.TaskResult]]: ...


class Outbox:
    def __init__(self, spool: ResultSpool, send: Callable[[list[m.TaskResult]], None],
                 clock: Callable[[], float], note: Callable[[str], None]) -> None:
        """``send``: one Results message to the service (dropped if the link is
        down); ``clock``: monotonic seconds; ``note``: a problem for the status's
        recent errors."""
        self.spool = spool
        self._send = send
        self._clock = clock
        self._note = note
        self._results: list[m.TaskResult] = []  # from the interchange, not yet flushed
        self._results_since: float | None = None  # when the hold on them began
        # Results the spool could not take (disk full, read-only): kept here, sent
        # anyway, and spooled again every second until the spool takes them.
        self.unspooled: dict[str, m.TaskResult] = {}
        self.unremoved: set[str] = set()  # acknowledged, but the spool could not forget
        self.spool_error = ""
        self.sent_at: dict[str, float] = {}  # results sent and not yet acknowledged

    @property
    def waiting(self) -> int:
        """Results added and not yet flushed."""
        return len(self._results)

    @property
    def unacknowledged(self) -> int:
        """Results flushed whose acknowledgement has not come (on disk or in memory)."""
        return len(self.spool) + len(self.unspooled)

    def add(self, results: list[m.TaskResult], max_bytes: int) -> None:
        """Results from the interchange; one over the service's limit becomes a
        ResultTooLarge failure (the service would refuse the whole message)."""
        self._results.extend(r if len(r.data) <= max_bytes else _too_large(r, max_bytes)
                             for r in results)

    def flush(self, *, held: int, workers: int, link_up: bool,
              force: bool = False) -> list[m.TaskResult]:
        """Send what waits, then spool it (one transaction), unless it should wait
        for more (see ``_hold``; ``force``: never). Sending first takes the spool's
        write off the latency path and loses nothing: the acknowledgement that lets
        the spool forget a result is read by the same thread, after the write.
        ``held``: the tasks the agent holds, these results' included; ``workers``:
        the endpoint's. Returns the results that left."""
        if not self._results or (not force and self._hold(held, workers)):
            return []
        results, self._results = self._results, []
        self._results_since = None
        if link_up:
            self._send_results(results)
        self._spool(results)
        return results

    def _hold(self, held: int, workers: int) -> bool:
        """Whether results wait for more: only under load (more tasks held than
        there are workers to run them), for at most RESULTS_HOLD_S and
        RESULTS_HOLD_MAX results. A burst's results then leave in a few large messages
        and spool transactions instead of one per loop turn, each of which costs the
        service and the spool more than its size; a lone task never waits."""
        now = self._clock()
        if self._results_since is None:
            self._results_since = now
        queued = held - len(self._results)
        return (queued > max(workers, 1)
                and len(self._results) < RESULTS_HOLD_MAX
                and now - self._results_since < RESULTS_HOLD_S)

    def wait_ms(self, timeout: int) -> int:
        """The loop's poll timeout, shortened to when held results must leave."""
        if self._results_since is None or not self._results:
            return timeout
        left = self._results_since + RESULTS_HOLD_S - self._clock()
        return max(0, min(timeout, math.ceil(left * 1000)))

    def acked(self, task_ids: list[str]) -> None:
        """The service stored these results: the spool forgets them."""
        for task_id in task_ids:
            self.sent_at.pop(task_id, None)
            self.unspooled.pop(task_id, None)
        self._forget(task_ids)

    def resend_all(self) -> None:
        """After a (re)connect: every result not acknowledged goes again."""
        for batch in self.spool.batches(RESEND_BATCH):
            self._send_results(batch)
        pending = list(self.unspooled.values())
        for i in range(0, len(pending), RESEND_BATCH):
            self._send_results(pending[i:i + RESEND_BATCH])

    def tick(self, link_up: bool) -> None:
        """Once a second: spool again what the spool could not take, and resend
        what waited too long for its acknowledgement."""
        if self.unspooled or self.unremoved or self.spool_error:
            self._retry_spool()
        if link_up:
            self._resend_unacknowledged()

    def _send_results(self, results: list[m.TaskResult]) -> None:
        self._send(results)
        now = self._clock()
        for r in results:
            self.sent_at[r.task_id] = now

    def _resend_unacknowledged(self) -> None:
        """Results the service did not acknowledge in time (it could not store them,
        or the acknowledgement was lost) are sent again; the service ignores repeats."""
        now = self._clock()
        stale = [t for t, at in self.sent_at.items() if now - at > RESEND_UNACKED_S]
        if not stale:
            return
        again = [self.unspooled[t] for t in stale if t in self.unspooled]
        again += self.spool.get(t for t in stale if t not in self.unspooled)
        log.info("resending %d unacknowledged results", len(again))
        for i in range(0, len(again), RESEND_BATCH):
            self._send_results(again[i:i + RESEND_BATCH])

    # --------------------------------------------------------------- spool --

    def _spool(self, results: list[m.TaskResult]) -> None:
        try:
            self.spool.add(results)
        except (sqlite3.Error, OSError) as exc:
            for r in results:
                self.unspooled[r.task_id] = r
            self._spool_failed("write", exc)

    def _forget(self, task_ids: list[str]) -> None:
        try:
            self.spool.remove(task_ids)
        except sqlite3.Error as exc:
            self.unremoved.update(task_ids)
            self._spool_failed("update", exc)

    def _spool_failed(self, what: str, exc: sqlite3.Error | OSError) -> None:
        problem = (f"cannot {what} the result spool at {self.spool.path}: {exc}; "
                   f"{len(self.unspooled)} results kept in memory until the service "
                   "acknowledges them")
        if not self.spool_error:
            log.error("%s", problem)
            self._note(problem)
        self.spool_error = problem

    def _retry_spool(self) -> None:
        if self.unspooled:
            pending = list(self.unspooled.values())
            self.unspooled.clear()
            self._spool(pending)
        if self.unremoved:
            ids, self.unremoved = list(self.unremoved), set()
            self._forget(ids)
        if self.spool_error and not self.unspooled and not self.unremoved:
            log.info("the spool at %s is writable again", self.spool.path)
            self.spool_error = ""


def _too_large(r: m.TaskResult, limit: int) -> m.TaskResult:
    return m.TaskResult(
        task_id=r.task_id, ok=False, stdout=r.stdout, started_at=r.started_at,
        finished_at=r.finished_at, attempts=r.attempts, error=m.ErrorInfo(
            code=ResultTooLarge.code,
            message=f"the result is {len(r.data)} bytes; the service's limit is {limit}"))
