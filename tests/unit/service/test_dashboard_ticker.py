"""The dashboard's shared status ticker: one reading per period for all viewers,
none while nobody views."""

from __future__ import annotations

import asyncio
from typing import Any

from funcx_flows.service.ui.ticker import StatusTicker


def test_one_reader_for_many_viewers_and_none_without_viewers() -> None:
    async def scenario() -> None:
        reads: list[int] = []
        state = {"e1": {"state": "online"}}

        def read() -> dict[str, Any]:
            reads.append(1)
            return {k: dict(v) for k, v in state.items()}

        ticker = StatusTicker(read, period_s=0.01)
        for _ in range(20):
            ticker.join()
        assert len(reads) == 1 and ticker.snapshot == {"e1": {"state": "online"}}
        woken = ticker.changed
        state["e1"]["state"] = "offline"
        await asyncio.wait_for(woken.wait(), 10)  # every viewer waits on this one event
        assert ticker.snapshot == {"e1": {"state": "offline"}}
        assert ticker.changed is not woken  # the next change wakes a fresh event
        task = ticker._task
        for _ in range(20):
            ticker.leave()
        assert ticker._task is None and task is not None
        await asyncio.sleep(0)
        assert task.done()  # nobody views: nothing reads
        before = len(reads)
        await asyncio.sleep(0.05)
        assert len(reads) == before

    asyncio.run(scenario())
