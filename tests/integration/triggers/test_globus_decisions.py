"""How the Globus trigger decides each transfer task: as soon as it is found, from
its start point on, once and for good (against the Transfer stand-in)."""

from __future__ import annotations

import time

import pytest
from globus_standin import fired_tasks, iso
from waiting import wait_until

from funcx_flows.triggers.serve import Running


def test_targets_start_while_a_poll_is_still_fetching_file_lists(standin, store,
                                                                 make_trigger):
    t0 = time.time() - 30
    store.set_mark("landed", "floor", iso(t0 - 10)[:19])
    for i in range(20):
        standin.add(completed=t0 + i, files=[f"/data/f{i}.h5"])
    standin.hold("files", 1)  # the first file list asked for is held back
    calls: list = []
    trig = make_trigger(store, calls, file_list_concurrency=4)
    with Running(trig):
        # the other 19 start while that poll cannot end
        wait_until(lambda: len(calls) == 19, 30)
        assert standin.holding.is_set() and store.get_mark("landed", "completion_time") is None
        standin.release()
        wait_until(lambda: len(calls) == 20, 30)
        wait_until(lambda: store.get_mark("landed", "completion_time") is not None, 30)
    assert 2 <= standin.stats.files_max_in_flight <= 4  # concurrent, and bounded
    assert sorted(fired_tasks(store.path)) == sorted(c[0] for c in calls)


def test_file_lists_are_retried_under_the_policy_within_the_poll(standin, store,
                                                                 make_trigger):
    t0 = time.time() - 30
    store.set_mark("landed", "floor", iso(t0 - 10)[:19])
    ids = [standin.add(completed=t0 + i, files=[f"/data/f{i}.h5"]) for i in range(6)]
    standin.fail(502, 2, "files")
    standin.fail(429, 2, "files")
    trig = make_trigger(store)
    trig.start()
    assert trig.poll() == 6  # the errors were absorbed by retries, not by a failed poll
    assert standin.stats.answers[502] == 2 and standin.stats.answers[429] == 2
    assert sorted(fired_tasks(store.path)) == sorted(ids)
    late = standin.add(files=["/data/late.h5"])
    standin.fail(502, 100, "files")  # more than the policy's attempts
    with pytest.raises(Exception, match="502"):
        trig.poll()
    assert store.get_mark("landed", "completion_time") == iso(t0 + 5)  # kept
    standin.heal()
    assert trig.poll() == 1
    assert fired_tasks(store.path).count(late) == 1


def test_the_first_start_fires_nothing_that_completed_before_it(standin, store,
                                                                make_trigger):
    before = standin.add(completed=time.time() - 120, files=["/data/a.h5"])
    trig = make_trigger(store, overlap_s=300)
    trig.start()
    after = standin.add(files=["/data/b.h5"])
    for _ in range(3):
        trig.poll()
    assert fired_tasks(store.path) == [after]
    assert before not in fired_tasks(store.path)


def test_since_asks_for_history_and_the_start_point_stays_fixed(standin, store,
                                                                make_trigger):
    now = time.time()
    ancient = standin.add(completed=now - 7200, files=["/data/a.h5"])
    recent = standin.add(completed=now - 120, files=["/data/b.h5"])
    trig = make_trigger(store, since=iso(now - 3600))
    trig.start()
    trig.poll()
    assert fired_tasks(store.path) == [recent]
    trig.stop()
    again = make_trigger(store, since=iso(now - 9000))  # read on the first start only
    again.start()
    again.poll()
    assert ancient not in fired_tasks(store.path)
    assert store.get_mark("landed", "floor") == iso(now - 3600)[:19]


def test_a_rejected_task_is_never_fetched_again(standin, store, make_trigger):
    t0 = time.time() - 30
    store.set_mark("landed", "floor", iso(t0 - 10)[:19])
    wrong_path = standin.add(completed=t0, label="run 1", files=["/home/x.h5"])
    wrong_label = standin.add(completed=t0, label="other", files=["/data/y.h5"])
    good = standin.add(completed=t0, label="run 2", files=["/data/z.h5"])
    rules = {"path_prefix": "/data/", "label_pattern": "^run"}
    for _ in range(2):  # two processes, one after the other, on the same state
        trig = make_trigger(store, **rules)
        trig.start()
        for _ in range(3):
            trig.poll()
        trig.stop()
    seen = standin.stats.files_by_task
    assert (seen[wrong_path], seen[wrong_label], seen[good]) == (1, 0, 1)
    assert fired_tasks(store.path) == [good]
    assert store.transfer_counts()["landed"] == {"fired": 1, "rejected": 2}
    changed = make_trigger(store, path_prefix="/home/")  # new rules judge them again
    changed.start()
    changed.poll()
    assert sorted(fired_tasks(store.path)) == sorted([good, wrong_path])
    assert seen[wrong_path] == 2 and seen[good] == 1
