"""The file trigger: fire once per complete file version, surviving restarts.

::

    watchdog thread(s)            serve loop (tick)                      slots (threads)
    inotify | polling  --nominate--> candidates --settle--> files table --batch--> runs
          \\-- wake ---------------->  (stat)               (SQLite)     (queued)   |
                                                                                claim
                                                                                  v
                                                                             target()

Events (inotify through watchdog, or polling for network filesystems) only
nominate candidates; a candidate becomes *ready* when it is complete: the
writer closed it (close-after-write, or a rename into place), or its size and
mtime have been stable for ``settle_s``, or (sentinel mode) its ``.done`` file
exists. Ready versions are recorded in the durable state exactly once, grouped
into batches by count or time window, and started with at most
``max_in_flight`` runs at a time; the rest wait, durably. On start, and after
the kernel drops events (inotify queue overflow), it rescans the watched
folders; versions already recorded are skipped, so a rescan only catches up.
A watched folder that disappears is reported and re-watched when it returns.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from funcx_flows.triggers.config import FileTriggerConfig
from funcx_flows.triggers.state import FileVersion, StateStore
from funcx_flows.triggers.targets import Starter

log = logging.getLogger(__name__)
DIR_CHECK_S = 1.0
PROBLEM = "problem"  # the marks key under which a trigger's current trouble is kept


@dataclass
class _Candidate:
    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0
    closed: bool = False


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: only nominates and wakes the serve loop."""

    def __init__(self, trigger: FileTrigger) -> None:
        self.trigger = trigger

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):  # readers (our own flows among them)
            return
        if event.is_directory:
            if kind in ("created", "moved"):
                self.trigger.rescan_soon()
            return
        if kind == "deleted":
            self.trigger.forget(os.fsdecode(event.src_path))
            return
        if kind == "moved":  # renamed into place: complete by the writer's own word
            self.trigger.nominate(os.fsdecode(event.dest_path), closed=True)
        elif kind == "closed":
            self.trigger.nominate(os.fsdecode(event.src_path), closed=True)
        elif kind == "attrib":
            self.trigger.nominate(os.fsdecode(event.src_path), closed=None)
        else:  # created, modified: being written
            self.trigger.nominate(os.fsdecode(event.src_path), closed=False)


class _OverflowWatch(logging.Handler):
    """watchdog only logs an inotify queue overflow; every live file trigger rescans."""

    triggers: weakref.WeakSet[FileTrigger] = weakref.WeakSet()

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage():
            for t in list(self.triggers):
                t.rescan_soon()


_overflow = _OverflowWatch(logging.WARNING)
logging.getLogger("watchdog.observers.inotify_c").addHandler(_overflow)


class FileTrigger:
    def __init__(self, config: FileTriggerConfig, store: StateStore,
                 call: Callable[..., Any] | None = None) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.wake = threading.Event()
        self.starter = Starter(config.name, config.target, store, config.max_in_flight, call,
                               default_parameters=lambda ctx: {"paths": ctx["paths"]},
                               wake=self.wake)
        self._candidates: dict[str, _Candidate] = {}
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}
        self._missing: set[str] = set()
        self._last_dir_check = 0.0
        self._last_rescan = 0.0
        self._rescan = True
        self._held: IO[bytes] | None = None
        self.problems: list[str] = []

    # ---------------------------------------------------------- matching --

    def _roots(self) -> list[Path]:
        return [Path(p).expanduser().absolute() for p in self.config.paths]

    def matches(self, path: str) -> bool:
        name = os.path.basename(path)
        c = self.config
        if c.mode == "sentinel" and name.endswith(c.sentinel_suffix):
            return False
        if any(fnmatch.fnmatch(name, pat) for pat in c.ignore_patterns):
            return False
        return any(fnmatch.fnmatch(name, pat) for pat in c.patterns)

    def nominate(self, path: str, closed: bool | None = False) -> None:
        """A file may have changed (``closed``: the writer says it is complete;
        None: no news about its writer)."""
        c = self.config
        if c.mode == "sentinel" and path.endswith(c.sentinel_suffix):
            path, closed = path[: -len(c.sentinel_suffix)], None
        if not self.matches(path):
            return
        with self._lock:
            cand = self._candidates.setdefault(path, _Candidate())
            if closed is not None:
                cand.closed = closed
        self.wake.set()

    def forget(self, path: str) -> None:
        with self._lock:
            self._candidates.pop(path, None)

    def rescan_soon(self) -> None:
        self._rescan = True
        self.wake.set()

    def _scan(self) -> Iterator[str]:
        for root in self._roots():
            if not root.is_dir():
                continue
            if self.config.recursive:
                for folder, _dirs, names in os.walk(root):
                    for f in names:
                        yield os.path.join(folder, f)
            else:
                try:
                    entries = [e.path for e in os.scandir(root) if e.is_file()]
                except OSError:
                    continue
                yield from entries

    def _catch_up(self) -> None:
        """Nominate what is in the folders and not yet recorded."""
        n = 0
        for path in self._scan():
            if not self.matches(path) and not path.endswith(self.config.sentinel_suffix):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if self.store.known(self.name, FileVersion(path, st.st_size, st.st_mtime_ns)):
                continue
            self.nominate(path, closed=None)
            n += 1
        if n:
            log.info("trigger %s: %d file(s) not yet seen found by a scan", self.name, n)

    # --------------------------------------------------------- life cycle --

    def start(self, wake: threading.Event | None = None) -> None:
        """Claim the trigger, recover interrupted runs, start watching."""
        if wake is not None:
            self.wake = self.starter.wake = wake
        self._held = self.store.claim_trigger(self.name)
        self.starter.recover()
        self._observer = PollingObserver(timeout=self.config.poll_interval_s) \
            if self.config.polling else Observer()
        self._observer.start()
        _OverflowWatch.triggers.add(self)
        self._check_dirs(force=True)

    def stop(self, wait: bool = True) -> None:
        _OverflowWatch.triggers.discard(self)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)
            self._observer = None
        self.starter.close(wait=wait)
        if self._held is not None:
            self._held.close()
            self._held = None

    def _problem(self, msg: str | None) -> None:
        if msg is None:
            self.store.set_mark(self.name, PROBLEM, "")
            return
        log.error("trigger %s: %s", self.name, msg)
        self.problems = [*self.problems[-9:], msg]
        self.store.set_mark(self.name, PROBLEM, msg)

    def _check_dirs(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_dir_check < DIR_CHECK_S:
            return
        self._last_dir_check = now
        assert self._observer is not None
        for root in self._roots():
            key = str(root)
            if root.is_dir():
                if key not in self._watches or key in self._missing:
                    if key in self._watches:
                        try:
                            self._observer.unschedule(self._watches.pop(key))
                        except (KeyError, ValueError):
                            log.debug("trigger %s: %s was no longer watched", self.name, key)
                    self._watches[key] = self._observer.schedule(
                        _Handler(self), key, recursive=self.config.recursive)
                    if key in self._missing:
                        log.warning("trigger %s: %s is back; watching it again", self.name, key)
                        self._missing.discard(key)
                        if not self._missing:
                            self._problem(None)
                    self._rescan = True
            elif key not in self._missing:
                self._missing.add(key)
                self._problem(f"watched folder {key} does not exist "
                              "(it will be watched when it appears)")

    # ---------------------------------------------------------------- tick --

    def tick(self) -> None:
        self._check_dirs()
        every = self.config.rescan_interval_s
        if every and time.monotonic() - self._last_rescan >= every:
            self._rescan = True
        if self._rescan:
            self._rescan = False
            self._last_rescan = time.monotonic()
            self._catch_up()
        ready = self._settle()
        if ready:
            new = self.store.record_files(self.name, ready)
            if new:
                log.debug("trigger %s: %d new file(s)", self.name, len(new))
        self._batch()
        self.starter.pump()

    def _settle(self) -> list[FileVersion]:
        now = time.monotonic()
        c = self.config
        ready: list[FileVersion] = []
        with self._lock:
            items = list(self._candidates.items())
        for path, cand in items:
            try:
                st = os.stat(path)
            except OSError:
                self.forget(path)
                continue
            version = FileVersion(path, st.st_size, st.st_mtime_ns)
            if c.mode == "sentinel":
                if os.path.exists(path + c.sentinel_suffix):
                    ready.append(version)
                    self.forget(path)
                continue
            if cand.closed and c.close_settle_s == 0:
                ready.append(version)
                self.forget(path)
                continue
            if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                cand.size, cand.mtime_ns, cand.stable_since = st.st_size, st.st_mtime_ns, now
                continue
            needed = min(c.settle_s, c.close_settle_s) if cand.closed else c.settle_s
            if now - cand.stable_since >= needed:
                ready.append(version)
                self.forget(path)
        return ready

    def _batch(self) -> None:
        c = self.config
        pending = self.store.unbatched(self.name)
        batches = []
        now = time.time()
        while pending:
            full = len(pending) >= c.batch_size
            waited = now - pending[0][1] >= c.batch_window_s
            if not (full or waited):
                break
            chunk = [v for v, _ in pending[: c.batch_size]]
            pending = pending[c.batch_size:]
            batches.append((chunk, {
                "trigger": self.name, "paths": [v.path for v in chunk], "path": chunk[0].path,
                "count": len(chunk), "sizes": [v.size for v in chunk],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
                "timestamp": now}))
        if batches:
            self.store.batch_many(self.name, batches)
            log.debug("trigger %s: %d run(s) queued", self.name, len(batches))
