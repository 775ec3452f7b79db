from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from funcx_flows.endpoint.strategy import Actions, BlockView, Inputs, backoff_until, decide


def inputs(**kw):
    base = {"now": 1000.0, "tasks_waiting": 0, "blocks": (), "min_blocks": 0, "max_blocks": 4,
            "workers_per_block": 2, "idle_timeout": 60.0}
    return Inputs(**{**base, **kw})


def running(bid, workers=2, busy=0, idle_since=None):
    return BlockView(bid, "running", workers, busy, idle_since)


def test_scale_out_when_tasks_wait_up_to_max():
    assert decide(inputs(tasks_waiting=5)).submit == 3
    assert decide(inputs(tasks_waiting=100)).submit == 4
    full = tuple(running(f"b{i}", busy=2) for i in range(4))
    assert decide(inputs(tasks_waiting=100, blocks=full)).submit == 0


def test_pending_blocks_count_as_coming_capacity():
    coming = (BlockView("p", "pending"),)
    assert decide(inputs(tasks_waiting=2, blocks=coming)) == Actions()
    assert decide(inputs(tasks_waiting=3, blocks=coming)).submit == 1


def test_min_blocks_are_kept_and_idle_blocks_released():
    assert decide(inputs(min_blocks=2)).submit == 2
    idle = (running("a", idle_since=900.0), running("b", idle_since=990.0))
    act = decide(inputs(blocks=idle, min_blocks=1))
    assert act.cancel == ("a",)  # b has been idle only 10 s
    assert decide(inputs(blocks=idle, min_blocks=2)).cancel == ()
    assert decide(inputs(blocks=idle, tasks_waiting=1)).cancel == ()


def test_failed_starts_back_off_exponentially():
    assert backoff_until((100.0,), 5, 600) == 105.0
    assert backoff_until((90.0, 100.0, 110.0), 5, 600) == 130.0
    assert backoff_until(tuple(float(i) for i in range(20)), 5, 600) == 19 + 600
    waiting = inputs(tasks_waiting=5, failures=(999.0, 999.5))
    assert decide(waiting).submit == 0 and "backing off" in decide(waiting).reason
    assert decide(inputs(tasks_waiting=5, failures=(900.0,))).submit == 3


blocks_st = st.lists(st.builds(
    BlockView, block_id=st.uuids().map(str), state=st.sampled_from(["pending", "running"]),
    workers=st.integers(0, 8), busy=st.integers(0, 8),
    idle_since=st.one_of(st.none(), st.floats(0, 2000))), max_size=10)


@given(blocks=blocks_st, waiting=st.integers(0, 1000), lo=st.integers(0, 5),
       extra=st.integers(0, 5), wpb=st.integers(1, 8), timeout=st.floats(0, 500),
       failures=st.lists(st.floats(0, 2000), max_size=5))
def test_never_above_max_nor_below_min(blocks, waiting, lo, extra, wpb, timeout, failures):
    hi = max(lo, 1) + extra
    blocks = [b for b in blocks if b.busy <= b.workers][:hi]
    i = inputs(tasks_waiting=waiting, blocks=tuple(blocks), min_blocks=lo, max_blocks=hi,
               workers_per_block=wpb, idle_timeout=timeout, failures=tuple(failures))
    act = decide(i)
    after = len(blocks) + act.submit - len(act.cancel)
    assert act.submit >= 0 and not (act.submit and act.cancel)
    assert after <= hi
    assert len(act.cancel) == 0 or after >= lo
    assert set(act.cancel) <= {b.block_id for b in blocks if b.busy == 0}
