"""The file trigger on real filesystem events, restarts and failures."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from waiting import wait_until

from funcx_flows.triggers.config import FileTriggerConfig, TargetConfig
from funcx_flows.triggers.filewatch import FileTrigger
from funcx_flows.triggers.serve import Running
from funcx_flows.triggers.state import StateStore


class Recorder:
    """A target that records what it was started with (and file sizes at that moment)."""

    def __init__(self, fail_first: int = 0, gate: threading.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self.sizes: list[list[int]] = []
        self.fail_first = fail_first
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, paths: list[str]) -> int:
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                raise RuntimeError("the flow could not start")
            self.calls.append(list(paths))
            self.sizes.append([os.path.getsize(p) for p in paths])
        if self.gate is not None:
            self.gate.wait(30)
        return len(paths)

    @property
    def files(self) -> list[str]:
        return [p for c in self.calls for p in c]


def trigger(folder: Path, store: StateStore, target: Recorder, **options) -> FileTrigger:
    options.setdefault("settle_s", 0.3)
    target_opts = {k: options.pop(k) for k in list(options)
                   if k in ("max_attempts", "retry_initial_s", "retry_max_s")}
    config = FileTriggerConfig(name="det", paths=[str(folder)], target=TargetConfig(
        flow="unused:callable", **target_opts), **options)
    return FileTrigger(config, store, call=target)


def test_a_file_written_slowly_fires_once_when_complete(tmp_path):
    folder = tmp_path / "detector"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    rec = Recorder()
    with Running(trigger(folder, store, rec, settle_s=1.0)):
        with open(folder / "frame.raw", "wb") as f:
            for _ in range(5):
                f.write(b"x" * 1000)
                f.flush()
                time.sleep(0.3)
        wait_until(lambda: rec.calls, 20)
        time.sleep(1.5)  # nothing more may come for this file
    assert rec.calls == [[str(folder / "frame.raw")]] and rec.sizes == [[5000]]
    store.close()


def test_close_after_write_does_not_wait_for_the_settle_time(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    rec = Recorder()
    with Running(trigger(folder, store, rec, settle_s=60)):
        time.sleep(0.3)
        (folder / "a.h5").write_bytes(b"abc")
        wait_until(lambda: rec.calls, 20, "close-after-write was not honoured")
    store.close()


def test_restart_catches_up_and_never_repeats(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "before.raw").write_bytes(b"1")
    store = StateStore(tmp_path / "state.db")
    rec = Recorder()
    with Running(trigger(folder, store, rec)):
        wait_until(lambda: len(rec.calls) == 1, 20)
    (folder / "while-down-1.raw").write_bytes(b"22")
    (folder / "while-down-2.raw").write_bytes(b"333")
    store.close()
    store = StateStore(tmp_path / "state.db")
    rec2 = Recorder()
    with Running(trigger(folder, store, rec2)):
        wait_until(lambda: len(rec2.files) == 2, 20)
        time.sleep(1.0)
        (folder / "before.raw").write_bytes(b"changed")  # a new version fires again
        wait_until(lambda: len(rec2.files) == 3, 20)
        time.sleep(1.0)
    assert sorted(os.path.basename(p) for p in rec2.files) == [
        "before.raw", "while-down-1.raw", "while-down-2.raw"]
    assert rec.files == [str(folder / "before.raw")]
    store.close()


def test_batches_by_count_then_by_time_window(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    rec = Recorder()
    with Running(trigger(folder, store, rec, batch_size=3, batch_window_s=2.0, settle_s=0.2)):
        for i in range(7):
            (folder / f"f{i}.raw").write_bytes(b"x")
        wait_until(lambda: len(rec.files) == 7, 30)
    assert sorted(len(c) for c in rec.calls) == [1, 3, 3]
    assert sorted(rec.files) == sorted(str(folder / f"f{i}.raw") for i in range(7))
    store.close()


def test_backpressure_queues_durably(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    gate = threading.Event()
    rec = Recorder(gate=gate)
    try:
        with Running(trigger(folder, store, rec, max_in_flight=1)):
            for i in range(3):
                (folder / f"f{i}.raw").write_bytes(b"x")
            wait_until(lambda: store.counts().get("det", {}).get("queued") == 2, 20)
            assert len(rec.calls) == 1 and store.counts()["det"].get("running") == 1
            gate.set()
            wait_until(lambda: store.counts()["det"].get("done") == 3, 20)
    finally:
        gate.set()
    store.close()


def test_failed_starts_are_retried_then_kept_visible(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    flaky = Recorder(fail_first=2)
    with Running(trigger(folder, store, flaky, max_attempts=5, retry_initial_s=0.05)):
        (folder / "a.raw").write_bytes(b"x")
        wait_until(lambda: flaky.calls, 20)
    (run,) = store.runs("det")
    assert run.state == "done" and run.attempts == 3
    store.close()
    store = StateStore(tmp_path / "other.db")
    broken = Recorder(fail_first=100)
    with Running(trigger(folder, store, broken, max_attempts=2, retry_initial_s=0.05)):
        wait_until(lambda: store.counts().get("det", {}).get("failed") == 1, 20)
    (run,) = store.runs("det")
    assert run.attempts == 2 and "could not start" in (run.error or "")
    store.close()


def test_sentinel_mode_waits_for_the_done_file(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    rec = Recorder()
    with Running(trigger(folder, store, rec, mode="sentinel", settle_s=0)):
        (folder / "scan.h5").write_bytes(b"data")
        time.sleep(1.0)
        assert rec.calls == []
        (folder / "scan.h5.done").write_bytes(b"")
        wait_until(lambda: rec.calls, 20)
    assert rec.calls == [[str(folder / "scan.h5")]]
    store.close()


def test_polling_mode_for_filesystems_without_events(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    rec = Recorder()
    with Running(trigger(folder, store, rec, polling=True, poll_interval_s=0.2,
                         patterns=["*.tif"])):
        (folder / "skip.txt").write_bytes(b"x")
        (folder / "img.tif").write_bytes(b"x")
        wait_until(lambda: rec.calls, 20)
        time.sleep(0.5)
    assert rec.files == [str(folder / "img.tif")]
    store.close()


def test_a_vanished_folder_is_reported_and_watched_again(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    store = StateStore(tmp_path / "state.db")
    rec = Recorder()
    t = trigger(folder, store, rec)
    with Running(t):
        time.sleep(0.3)
        shutil.rmtree(folder)
        wait_until(lambda: any("does not exist" in p for p in t.problems), 20)
        folder.mkdir()
        time.sleep(1.5)
        (folder / "back.raw").write_bytes(b"x")
        wait_until(lambda: rec.calls, 20)
    assert rec.files == [str(folder / "back.raw")]
    store.close()
