"""Fan-out of finished task records to the result streams (WebSockets) of their owners."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Subscription:
    """Records waiting for one result stream. One consumer (the stream's task) takes
    them in batches; a put wakes it through a bare future, one loop turn (a Queue
    getter task watched by ``asyncio.wait`` took two turns and two task objects)."""

    user_id: str
    group_id: str | None
    token_digest: str = ""  # of the token the stream was opened with
    pending: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    reason: str = ""  # why the service closed it ("" when the client went away)
    _waiter: asyncio.Future[None] | None = None

    def put(self, records: list[dict[str, Any]]) -> None:
        self.pending.extend(records)
        self._wake()

    def close(self, reason: str = "") -> None:
        """No more takes wanted (the client went away, or ``reason``): ``take``
        returns None, even with records pending."""
        self.closed = True
        self.reason = self.reason or reason
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self) -> list[dict[str, Any]] | None:
        """All records put since the last take (waits for one); None once closed."""
        while not self.pending:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.closed:
            return None
        batch, self.pending = self.pending, []
        return batch


class Hub:
    """Lives on the event loop; ``publish`` must be called from the loop thread."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, user_id: str, group_id: str | None,
                  token_digest: str = "") -> Subscription:
        sub = Subscription(user_id, group_id, token_digest)
        self._subs.setdefault(user_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.user_id]

    def publish(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """``records``: (owner user id, TaskRecord) pairs."""
        per_sub: dict[Subscription, list[dict[str, Any]]] = {}
        for user_id, record in records:
            for sub in self._subs.get(user_id, ()):
                if sub.group_id is None or sub.group_id == record.get("group_id"):
                    per_sub.setdefault(sub, []).append(record)
        for sub, batch in per_sub.items():
            sub.put(batch)

    def close_tokens(self, digests: set[str], reason: str) -> int:
        """Close the streams opened with these tokens (revoked); how many."""
        closed = 0
        for subs in self._subs.values():
            for sub in subs:
                if sub.token_digest in digests and not sub.closed:
                    sub.close(reason)
                    closed += 1
        return closed

    def streaming(self, user_id: str, group_id: str) -> bool:
        """Whether a result stream of this user's group is open."""
        return any(sub.group_id == group_id and not sub.closed
                   for sub in self._subs.get(user_id, ()))

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())


class Outbox:
    """Records put from any thread, published on the loop in the order put.

    The store puts each transaction's finished rows under the lock that orders
    sequence numbers, so this order is the sequence order. A record committed in a
    worker thread must not be overtaken by one the loop commits before the
    thread's hand-over runs: a client that saw the later one, then lost its stream,
    would resume after it and miss the earlier one. So every publication takes all
    that is pending, in order. ``put`` only queues (it runs under the store's
    locks) and makes sure a ``drain`` follows at the loop's next turn; the
    dispatcher drains at once after storing results, for the latency."""

    def __init__(self, hub: Hub,
                 convert: Callable[[list[Any]], Iterable[tuple[str, dict[str, Any]]]]) -> None:
        """``convert``: what is put -> (owner user id, TaskRecord) pairs, done on the
        loop when published."""
        self.hub = hub
        self.convert = convert
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._drain_due = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the loop that publishes."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def put(self, items: Iterable[Any]) -> None:
        with self._lock:
            self._pending.extend(items)
            if self._drain_due or self._loop is None:
                return
            self._drain_due = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self.drain)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens
                self._loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """Publish what is pending (on the loop)."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._drain_due = False
        if batch:
            self.hub.publish(self.convert(batch))
