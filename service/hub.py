"""Fan-out of finished task records to the result streams (WebSockets) of their owners."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Subscription:
    user_id: str
    group_id: str | None
    queue: asyncio.Queue[list[dict[str, Any]]] = field(default_factory=asyncio.Queue)


class Hub:
    """Lives on the event loop; ``publish`` must be called from the loop thread."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, user_id: str, group_id: str | None) -> Subscription:
        sub = Subscription(user_id, group_id)
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
            sub.queue.put_nowait(batch)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())
