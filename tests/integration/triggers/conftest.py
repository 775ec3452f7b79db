"""Fixtures for the Globus trigger tests: the Transfer stand-in and triggers on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import globus_sdk
import pytest
from globus_sdk.transport import RetryConfig
from globus_standin import TransferStandIn

from funcx_flows.retry import RetryPolicy
from funcx_flows.triggers.config import GlobusTriggerConfig, TargetConfig
from funcx_flows.triggers.globus import GlobusTransferTrigger
from funcx_flows.triggers.state import StateStore

QUICK = RetryPolicy(initial=0.01, max_delay=0.05, max_attempts=4)


@pytest.fixture
def standin() -> Iterator[TransferStandIn]:
    with TransferStandIn() as s:
        yield s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def make_trigger(standin: TransferStandIn) -> Iterator[Callable[..., GlobusTransferTrigger]]:
    """``make(store, calls, **config)``: a trigger on the stand-in whose target appends
    (task_id, files) to ``calls``; the SDK does not retry, so the trigger's policy does."""
    made: list[GlobusTransferTrigger] = []

    def make(store: StateStore, calls: list[Any] | None = None,
             **options: Any) -> GlobusTransferTrigger:
        client = globus_sdk.TransferClient(base_url=standin.url,
                                           retry_config=RetryConfig(max_retries=0))
        config = GlobusTriggerConfig.model_validate({
            "name": "landed", "target": TargetConfig(flow="unused:f"), "poll_interval_s": 0.1,
            "overlap_s": 60, **options})
        sink = calls if calls is not None else []
        trig = GlobusTransferTrigger(config, store, client, file_lists=QUICK,
                                     call=lambda task_id, files: sink.append((task_id, files)))
        made.append(trig)
        return trig

    yield make
    for trig in made:  # a test that failed half-way still ends its threads
        trig.stop(wait=True)

