"""What `funcx-flows trigger status` shows of a Globus trigger, and how a stall is told."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from globus_standin import iso
from waiting import wait_until

from funcx_flows.triggers.serve import Running

CLI = "from funcx_flows.cli import main; main()"


def status(store, home) -> str:
    env = {**os.environ, "FUNCX_FLOWS_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", CLI, "trigger", "status", "--state-db",
                           str(store.path)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_shows_watermark_last_poll_counts_and_what_was_not_listed(
        standin, store, make_trigger, home):
    cell = int(time.time()) - 200
    for _ in range(1100):  # one second, one request second: past task_list's filters
        standin.add(completed=cell + 0.5, requested=cell - 3.0, label="run")
    for i in range(20):
        standin.add(completed=cell + 1 + i, label="run" if i % 2 else "other")
    store.set_mark("landed", "floor", iso(cell - 10)[:19])
    trig = make_trigger(store, list_files=False, label_pattern="^run")
    trig.start()
    trig.poll()
    shown = status(store, home)
    assert "Globus transfer triggers" in shown
    assert iso(cell + 20) in shown  # the watermark
    assert f"{iso(cell - 10)[:19]}Z" in shown  # the start point
    assert "s ago)" in shown  # the last complete poll
    assert "1,020 " in shown and "1,010 " in shown and "10 " in shown  # seen, fired, rejected
    assert (f"landed: not listed completely: completed {iso(cell)[:19]}, requested "
            f"{iso(cell - 3)[:19]}: 1,000 of 1,100 listed") in shown
    assert "STALLED" not in shown


def test_a_stall_is_logged_and_shown_until_listings_are_whole_again(standin, store,
                                                                     make_trigger, home,
                                                                     caplog):
    standin.fail(502, 10**6, "task_list")
    trig = make_trigger(store, stall_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="funcx_flows.triggers"), Running(trig):
        wait_until(lambda: store.get_mark("landed", "stalled"), 30)
        shown = status(store, home)
        assert "landed: STALLED: no complete listing yet" in shown and "502" in shown
        assert "landed: not yet listed completely: completed from" in shown
        standin.heal()
        standin.add(files=["/data/a.h5"])
        wait_until(lambda: store.get_mark("landed", "stalled") == "", 60)
    assert "stalled: no complete listing yet" in caplog.text
    assert "no longer stalled" in caplog.text
    assert "STALLED" not in status(store, home)


def test_a_listing_answer_held_back_is_a_stall_that_holds_up_nothing_else(
        standin, store, make_trigger):
    t0 = time.time() - 30
    store.set_mark("landed", "floor", iso(t0 - 10)[:19])
    first = standin.add(completed=t0, files=["/data/a.h5"])
    calls: list = []
    trig = make_trigger(store, calls, stall_after_s=0.3)
    with Running(trig):
        wait_until(lambda: calls, 30)
        standin.hold("task_list")  # the next poll's listing gets no answer
        wait_until(lambda: "a poll has been running since" in (
            store.get_mark("landed", "stalled") or ""), 30)
        store.add_run("landed", {"task_id": "replayed", "files": []})  # still started
        wait_until(lambda: len(calls) == 2, 30)
        later = standin.add(files=["/data/b.h5"])
        standin.release()
        wait_until(lambda: later in [c[0] for c in calls], 30)
        wait_until(lambda: store.get_mark("landed", "stalled") == "", 30)
    assert [c[0] for c in calls] == [first, "replayed", later]
