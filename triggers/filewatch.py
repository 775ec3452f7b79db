"""The file trigger: fire once per complete file version, surviving restarts.

Events (inotify through watchdog, or polling for network filesystems) only
nominate candidates; a candidate becomes *ready* when it is complete: its size
and mtime have been stable for ``settle_s`` (a close-after-write shortens the
wait), or its ``.done`` sentinel exists. Ready versions are recorded in the
durable state exactly once, grouped into batches by count or time window, and
started with at most ``max_in_flight`` runs at a time; the rest wait, durably.
On start it scans the watched folders and catches up on what arrived while
it was down. A watched folder that disappears is reported and re-watched when
it returns.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    FileClosedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from funcx_flows.triggers.config import FileTriggerConfig
from funcx_flows.triggers.state import FileVersion, StateStore
from funcx_flows.triggers.targets import Starter

log = logging.getLogger(__name__)
CLOSE_SETTLE_S = 0.2  # after close-after-write, only this much stability is required
DIR_CHECK_S = 1.0


@dataclass
class _Candidate:
    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0
    closed: bool = False


class _Handler(FileSystemEventHandler):
    def __init__(self, trigger: FileTrigger) -> None:
        self.trigger = trigger

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.trigger.rescan_soon()
            return
        path = event.dest_path if isinstance(event, FileSystemMovedEvent) else event.src_path
        self.trigger.nominate(os.fsdecode(path), closed=isinstance(event, FileClosedEvent))


class FileTrigger:
    def __init__(self, config: FileTriggerConfig, store: StateStore,
                 call: Callable[..., Any] | None = None) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.starter = Starter(config.name, config.target, store, config.max_in_flight, call,
                               default_parameters=lambda ctx: {"paths": ctx["paths"]})
        self._candidates: dict[str, _Candidate] = {}
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}
        self._missing: set[str] = set()
        self._last_dir_check = 0.0
        self._rescan = True
        self.problems: list[str] = []

    # ---------------------------------------------------------- matching --

    def _roots(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.config.paths]

    def matches(self, path: str) -> bool:
        name = os.path.basename(path)
        c = self.config
        if c.mode == "sentinel" and name.endswith(c.sentinel_suffix):
            return False
        if any(fnmatch.fnmatch(name, pat) for pat in c.ignore_patterns):
            return False
        return any(fnmatch.fnmatch(name, pat) for pat in c.patterns)

    def nominate(self, path: str, closed: bool = False) -> None:
        c = self.config
        if c.mode == "sentinel" and path.endswith(c.sentinel_suffix):
            path = path[: -len(c.sentinel_suffix)]
        if not self.matches(path):
            return
        with self._lock:
            cand = self._candidates.setdefault(path, _Candidate())
            cand.closed = cand.closed or closed

    def rescan_soon(self) -> None:
        self._rescan = True

    def _scan(self) -> Iterator[str]:
        for root in self._roots():
            if not root.is_dir():
                continue
            walker = os.walk(root) if self.config.recursive else [
                (str(root), [], [e.name for e in os.scandir(root) if e.is_file()])]
            for folder, _dirs, files in walker:
                for f in files:
                    yield os.path.join(folder, f)

    # --------------------------------------------------------- life cycle --

    def start(self) -> None:
        self._observer = PollingObserver(timeout=self.config.poll_interval_s) \
            if self.config.polling else Observer()
        self._observer.start()
        self._check_dirs(force=True)
        self.store.recover()

    def stop(self, wait: bool = True) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)
            self._observer = None
        self.starter.close(wait=wait)

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
                        with contextlib.suppress(KeyError, ValueError):
                            self._observer.unschedule(self._watches.pop(key))
                    self._watches[key] = self._observer.schedule(
                        _Handler(self), key, recursive=self.config.recursive)
                    if key in self._missing:
                        log.warning("trigger %s: %s is back; watching it again", self.name, key)
                        self._missing.discard(key)
                    self._rescan = True
            elif key not in self._missing:
                self._missing.add(key)
                msg = f"watched folder {key} does not exist (will watch it when it appears)"
                log.error("trigger %s: %s", self.name, msg)
                self.problems = [*self.problems[-9:], msg]

    # ---------------------------------------------------------------- tick --

    def tick(self) -> None:
        self._check_dirs()
        if self._rescan:
            self._rescan = False
            for path in self._scan():
                self.nominate(path)
        ready = self._settle()
        if ready:
            new = self.store.record_files(self.name, ready)
            if new:
                log.info("trigger %s: %d new file(s)", self.name, len(new))
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
                self._drop(path)
                continue
            version = FileVersion(path, st.st_size, st.st_mtime_ns)
            if c.mode == "sentinel":
                if os.path.exists(path + c.sentinel_suffix):
                    ready.append(version)
                    self._drop(path)
                continue
            if (st.st_size, st.st_mtime_ns) != (cand.size, cand.mtime_ns):
                cand.size, cand.mtime_ns, cand.stable_since = st.st_size, st.st_mtime_ns, now
                continue
            needed = min(c.settle_s, CLOSE_SETTLE_S) if cand.closed else c.settle_s
            if now - cand.stable_since >= needed:
                ready.append(version)
                self._drop(path)
        return ready

    def _drop(self, path: str) -> None:
        with self._lock:
            self._candidates.pop(path, None)

    def _batch(self) -> None:
        c = self.config
        pending = self.store.unbatched(self.name)
        while pending:
            full = len(pending) >= c.batch_size
            waited = time.time() - pending[0][1] >= c.batch_window_s
            if not (full or waited):
                return
            chunk = [v for v, _ in pending[: c.batch_size]]
            pending = pending[c.batch_size:]
            context = {"trigger": self.name, "paths": [v.path for v in chunk],
                       "path": chunk[0].path, "count": len(chunk),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            run_id = self.store.batch(self.name, chunk, context)
            log.info("trigger %s: run %s queued for %d file(s)", self.name, run_id, len(chunk))
