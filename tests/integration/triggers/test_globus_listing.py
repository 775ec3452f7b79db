"""Complete listings whatever the volume: the Globus trigger against the Transfer
stand-in, which answers at most 1,000 tasks per filter and filters times to the second.

The start point is set in the state database (the ``floor`` mark) where a test needs
history, so the listing is what is under test, not the ``since`` option."""

from __future__ import annotations

import logging
import time

import pytest
from globus_standin import DEST, ELSEWHERE, SOURCE, fired_tasks, iso

from funcx_flows.triggers.state import StateStore

NOW = int(time.time())


def fired(store: StateStore) -> list[str]:
    return fired_tasks(store.path)


def started_at(store: StateStore, epoch: float) -> None:
    store.set_mark("landed", "floor", iso(epoch)[:19])


def poll_until_quiet(trig, most: int = 5) -> None:
    """Poll until a poll fires nothing more (a fixed trigger needs one poll)."""
    for _ in range(most):
        if not trig.poll():
            return


def test_1200_transfers_completing_in_one_second_all_fire_once(standin, store, make_trigger):
    burst = NOW - 300
    before = [standin.add(completed=burst - 50 + i) for i in range(30)]
    # requested over the ten minutes before; all completed within one second
    one_second = [standin.add(completed=burst + 0.5, requested=burst - 600 + i // 2)
                  for i in range(1200)]
    after = [standin.add(completed=burst + 1 + i % 60) for i in range(531)]
    started_at(store, burst - 100)
    trig = make_trigger(store, list_files=False)
    trig.start()
    standin.fail(502, 1, "task_list", after=2)  # a proxy error half-way through the split
    with pytest.raises(Exception, match="502"):
        trig.poll()
    assert store.get_mark("landed", "completion_time") is None  # the watermark kept
    poll_until_quiet(trig)
    runs = fired(store)
    assert sorted(runs) == sorted(before + one_second + after)  # all, each once
    assert store.get_mark("landed", "completion_time") == iso(burst + 60)
    assert standin.stats.answers[400] == 0  # never asked past Transfer's cap
    assert any("request_time" in path for _, path in standin.stats.requests)


def test_a_cell_past_every_filter_is_reported_and_the_listing_moves_on(standin, store,
                                                                       make_trigger, caplog):
    """More than 1,000 requested in one second and completed in one second: task_list
    has nothing left to split them by. What it can read fires; the rest is reported."""
    cell = NOW - 200
    crowd = [standin.add(completed=cell + 0.2, requested=cell - 5.0) for _ in range(1100)]
    later = [standin.add(completed=cell + 1 + i) for i in range(50)]
    started_at(store, cell - 10)
    trig = make_trigger(store, list_files=False)
    trig.start()
    with caplog.at_level(logging.WARNING, logger="funcx_flows.triggers"):
        poll_until_quiet(trig)
    runs = fired(store)
    assert set(later) <= set(runs) and len(runs) == len(set(runs)) == 1050
    assert set(runs) - set(later) < set(crowd)
    gaps = store.gaps()["landed"]
    assert gaps == [(f"completed {iso(cell)[:19]}, requested {iso(cell - 5)[:19]}",
                     gaps[0][1])] and "1,000 of 1,100 listed" in gaps[0][1]
    assert "could not list every transfer" in caplog.text
    assert store.get_mark("landed", "completion_time") == iso(cell + 50)  # not stalled


def test_late_transfers_are_found_with_more_than_the_cap_in_the_overlap(standin, store,
                                                                        make_trigger):
    top = NOW - 100  # overlap_s is 60: each poll re-reads [newest - 60 s, now)
    burst = [standin.add(completed=top - 50 + i % 51) for i in range(1500)]
    late = [standin.add(completed=top - 50 + i % 50, visible=False) for i in range(60)]
    too_late = standin.add(completed=top - 90, visible=False)  # older than the overlap
    started_at(store, top - 120)
    trig = make_trigger(store, list_files=False)
    trig.start()
    poll_until_quiet(trig)
    assert sorted(fired(store)) == sorted(burst)
    standin.reveal([*late, too_late])  # Transfer lists them only now
    newer = [standin.add(completed=top + 1 + i % 5) for i in range(20)]
    poll_until_quiet(trig)
    runs = fired(store)
    assert sorted(runs) == sorted(burst + late + newer)  # every late one, each once
    assert too_late not in runs  # indexed later than overlap_s: documented as missed


def test_endpoint_manager_pages_by_last_key_through_a_burst(standin, store, make_trigger):
    burst = NOW - 100
    incoming = [standin.add(completed=burst + 0.5, owner=f"user-{i % 7}") for i in range(1200)]
    outgoing = [standin.add(completed=burst + 0.5, source=DEST, destination=ELSEWHERE,
                            owner="user-x") for _ in range(100)]
    started_at(store, burst - 10)
    trig = make_trigger(store, list_files=False, endpoint_manager=True,
                        destination_endpoint=DEST)
    trig.start()
    poll_until_quiet(trig)
    assert sorted(fired(store)) == sorted(incoming)
    assert not set(outgoing) & set(fired(store))
    listings = [p for k, p in standin.stats.requests if k == "em_task_list"]
    assert any("last_key=" in p for p in listings)
    assert all("filter_endpoint_use=destination" in p for p in listings)


@pytest.mark.parametrize("server_filters", [True, False], ids=["server-filters",
                                                                 "server-ignores-use"])
def test_endpoint_manager_fires_only_for_transfers_into_the_collection_and_path(
        standin, store, make_trigger, server_filters):
    """Even a server that ignored filter_endpoint_use could not make it fire for a
    transfer leaving the collection: the destination is checked in every mode."""
    standin.honour_endpoint_use = server_filters
    t0 = NOW - 60
    into = [standin.add(completed=t0 + i, owner="someone", files=[f"/beamline/in{i}.h5"])
            for i in range(5)]
    out_of = [standin.add(completed=t0 + i, owner="someone", source=DEST,
                          destination=ELSEWHERE, files=[f"/beamline/out{i}.h5"])
              for i in range(5)]
    wrong_path = standin.add(completed=t0, owner="someone", files=["/home/x.h5"])
    failed = standin.add(completed=t0, owner="someone", status="FAILED",
                         files=["/beamline/f.h5"])
    standin.add(completed=t0, source=SOURCE, destination=ELSEWHERE, files=["/beamline/z.h5"])
    started_at(store, t0 - 10)
    calls: list = []
    trig = make_trigger(store, calls, endpoint_manager=True, destination_endpoint=DEST,
                        path_prefix="/beamline/")
    trig.start()
    poll_until_quiet(trig)
    assert sorted(fired(store)) == sorted(into)
    for task in [*out_of, wrong_path, failed]:
        assert task not in fired(store)
    assert standin.stats.files_by_task[out_of[0]] == 0  # judged without a request
    counts = store.transfer_counts()["landed"]
    assert counts == {"fired": 5, "rejected": 1 + (0 if server_filters else 5)}
