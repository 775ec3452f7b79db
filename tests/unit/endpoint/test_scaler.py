"""The block scaler and the loop exchange only immutable things: the loop posts a
LoopSnapshot, the scaler posts back a ScalerReport and notes. Driven step by step
with the test's clock over the real in-process provider (``inline``: submissions
are recorded, nothing is started); one test runs the thread."""

from __future__ import annotations

import dataclasses
import shlex
import threading
from collections.abc import Iterator

import pytest

from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.launch import LaunchPlan, ManagerOptions
from funcx_flows.endpoint.providers.base import FAILED, Block
from funcx_flows.endpoint.providers.inline import InlineProvider
from funcx_flows.endpoint.scaler import (
    LISTED_REFUSED,
    BlockLoadView,
    BlockScaler,
    LoopSnapshot,
    ScalerReport,
)
from funcx_flows.endpoint.strategy import Actions, Inputs
from funcx_flows.endpoint.strategy import decide as strategy_decide

T0 = 1_000_000.0
PLAN = LaunchPlan(interchange="tcp://127.0.0.1:1", workers=2, prefetch=2,
                  heartbeat_period_s=2.0, heartbeat_threshold_s=10.0)


class RecordingProvider(InlineProvider):
    """The inline provider, keeping the command each block was submitted with."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: dict[str, str] = {}

    def submit(self, block_id: str, command: str) -> Block:
        self.commands[block_id] = command
        return super().submit(block_id, command)


class RefusingProvider(InlineProvider):
    """A scheduler that refuses every submission (a closed queue)."""

    def submit(self, block_id: str, command: str) -> Block:
        raise RuntimeError("sbatch: error: Batch job submission failed: queue closed")


def config(**kw: object) -> EndpointConfig:
    base = {"provider": "inline", "init_blocks": 0, "min_blocks": 0, "max_blocks": 3,
            "max_workers_per_node": 2, "idle_timeout": 60, "strategy_period": 0.01}
    return EndpointConfig.model_validate({**base, **kw})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def notes(scaler: BlockScaler) -> list[str]:
    out = []
    while not scaler.notes.empty():
        out.append(scaler.notes.get_nowait())
    return out


def test_the_scaler_decides_from_the_posted_snapshot(clock: Clock):
    seen: list[Inputs] = []

    def record(i: Inputs) -> Actions:
        seen.append(i)
        return Actions()

    provider = InlineProvider()
    provider.submit("b1", "")
    scaler = BlockScaler(provider, config(), PLAN, record, clock)
    snap = LoopSnapshot(tasks_held=7, tasks_queued=2, tasks_running=3,
                        block_load=(BlockLoadView("b1", 2, 2),))
    with pytest.raises(AttributeError):
        snap.tasks_held = 0  # type: ignore[misc]  # posted, never changed
    scaler.post(snap)
    scaler.step()
    (i,) = seen
    assert i.tasks_waiting == 4  # held but not running beats the queue's 2
    assert [(b.block_id, b.workers, b.busy, b.idle_since) for b in i.blocks] == [
        ("b1", 2, 2, None)]
    assert i.now == T0 and i.workers_per_block == 2
    scaler.post(LoopSnapshot(block_load=(BlockLoadView("b1", 2, 0),)))  # all done
    clock.now += 5
    scaler.step()
    assert seen[1].tasks_waiting == 0
    assert seen[1].blocks[0].idle_since == T0 + 5  # idle from the step that saw it


def test_waiting_tasks_bring_blocks_and_the_report_is_frozen(clock: Clock):
    provider = RecordingProvider()
    scaler = BlockScaler(provider, config(), PLAN, strategy_decide, clock)
    scaler.post(LoopSnapshot(tasks_held=5, max_result_bytes=1234))
    assert scaler.step() == Actions(submit=3, reason="tasks waiting")
    assert len(provider.poll()) == 3
    # a new manager is told the service's limit the loop posted
    for command in provider.commands.values():
        opts = ManagerOptions.from_json(shlex.split(command)[-1])
        assert opts.max_result_bytes == 1234
    report = scaler.report
    assert report == ScalerReport()  # the blocks show once a poll has seen them
    scaler.step()
    assert isinstance(scaler.report.blocks, tuple) and len(scaler.report.blocks) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        scaler.report.blocks[0].state = "x"  # type: ignore[misc]
    assert report == ScalerReport()  # a report once posted never changes


def test_a_refused_submission_is_shown_noted_and_backed_off(clock: Clock):
    scaler = BlockScaler(RefusingProvider(), config(min_blocks=1), PLAN, strategy_decide,
                         clock)
    scaler.step()
    (note,) = notes(scaler)
    assert "could not start" in note and "queue closed" in note
    (refused,) = scaler.report.blocks
    assert refused.state == FAILED and "queue closed" in refused.message
    clock.now += 1
    assert "backing off" in scaler.step().reason  # no submission in a loop
    assert notes(scaler) == []
    for _ in range(2 * LISTED_REFUSED):
        clock.now += 3600
        scaler.step()
    assert len(scaler.report.blocks) == LISTED_REFUSED  # the newest refusals only


def test_a_block_that_fails_is_noted_once(clock: Clock):
    provider = InlineProvider()
    provider.submit("b1", "")
    scaler = BlockScaler(provider, config(min_blocks=1), PLAN, strategy_decide, clock)
    scaler.step()
    provider.ended("b1", failure="the node rebooted")
    scaler.step()
    scaler.step()
    assert notes(scaler) == ["block b1 failed: the node rebooted"]
    assert scaler.block_failures == [T0]
    assert [(b.block_id, b.state) for b in scaler.report.blocks] == [("b1", FAILED)]


def test_a_block_idle_past_the_timeout_is_released(clock: Clock):
    provider = InlineProvider()
    for b in ("b1", "b2"):
        provider.submit(b, "")
    scaler = BlockScaler(provider, config(min_blocks=1), PLAN, strategy_decide, clock)
    scaler.post(LoopSnapshot(block_load=(BlockLoadView("b1", 2, 0), BlockLoadView("b2", 2, 1))))
    assert scaler.step() == Actions()
    clock.now += 61
    assert scaler.step().cancel == ("b1",)  # b2 is busy
    assert [b.block_id for b in provider.poll() if b.active] == ["b2"]


@pytest.fixture
def started() -> Iterator[list[BlockScaler]]:
    scalers: list[BlockScaler] = []
    yield scalers
    for s in scalers:
        s.stop()


def test_the_thread_acts_on_the_latest_snapshot(started: list[BlockScaler]):
    provider = InlineProvider()
    saw_work = threading.Event()

    def watch(i: Inputs) -> Actions:
        if i.tasks_waiting == 9:
            saw_work.set()
        return Actions()

    scaler = BlockScaler(provider, config(init_blocks=1), PLAN, watch)
    started.append(scaler)
    scaler.start()
    assert len(provider.poll()) == 1  # init_blocks, before the thread runs
    assert len(scaler.report.blocks) == 1
    scaler.post(LoopSnapshot(tasks_held=9))
    assert saw_work.wait(30), "the scaler never saw the posted snapshot"
    scaler.stop()
    assert not scaler._thread.is_alive()


def test_a_failing_step_is_noted_and_scaling_goes_on(started: list[BlockScaler]):
    calls = 0
    again = threading.Event()

    def flaky(i: Inputs) -> Actions:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("squeue timed out")
        again.set()
        return Actions()

    scaler = BlockScaler(InlineProvider(), config(), PLAN, flaky)
    started.append(scaler)
    scaler.start()
    assert again.wait(30), "scaling stopped after a failure"
    scaler.stop()
    assert notes(scaler) == ["scaling failed: RuntimeError: squeue timed out"]
