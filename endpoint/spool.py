"""Results kept on disk until the service acknowledges them (SQLite, WAL).

A result enters the spool before it is sent upstream and leaves it only on
``ResultsAck``; after a crash or a lost link the agent resends what is left.

Large results (over BLOB_MIN_BYTES encoded) go to a file of their own beside
the database: SQLite writes a 10 MB blob through its WAL page by page and frees
it the same way (~70 ms here), a file takes ~6 ms. The file is complete (written
under a temporary name, then renamed) before its row commits, and its row is
deleted before the file, so a crash leaves at most an orphan file, removed on
the next open.

The WAL is copied into the database by a thread of the spool's own, every
CHECKPOINT_PERIOD_S, on a connection of its own (PASSIVE: the agent's writes go
on meanwhile): SQLite's automatic checkpoint ran inside whichever of the agent's
commits crossed 1,000 pages, a stall of several ms on that task's path. The
automatic one stays as a backstop at WAL_BACKSTOP_PAGES.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from funcx_flows import messages as m
from funcx_flows.blobfiles import MIN_BYTES, BlobFolder
from funcx_flows.errors import EndpointError

log = logging.getLogger(__name__)

BLOB_MIN_BYTES = MIN_BYTES
CHECKPOINT_PERIOD_S = 0.5
WAL_BACKSTOP_PAGES = 16_000

class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA journal_size_limit=16777216")  # WAL back to 16 MB
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            self._db.execute("CREATE TABLE IF NOT EXISTS results "
                             "(task_id TEXT PRIMARY KEY, body BLOB NOT NULL)")
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
            if "in_file" not in columns:  # a spool written by an earlier version
                self._db.execute("ALTER TABLE results ADD COLUMN in_file INTEGER NOT NULL "
                                 "DEFAULT 0")
            self._ids: set[str] = {r[0] for r in self._db.execute(
                "SELECT task_id FROM results")}
            self._in_files: set[str] = {r[0] for r in self._db.execute(
                "SELECT task_id FROM results WHERE in_file = 1")}
        except sqlite3.Error as exc:
            raise EndpointError(f"cannot open the result spool at {path}: {exc}") from exc
        folder = path.parent / (path.name + ".blobs")
        try:
            self.blobs = BlobFolder(folder)
            self.blobs.keep_only(self._in_files)  # orphans of a crash, half-written files
        except OSError as exc:
            raise EndpointError(f"cannot use the spool's folder {folder}: {exc}") from exc
        self._decoder = m.Decoder(m.Results)
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, daemon=True,
                                              name="spool-checkpoint")
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("no background checkpoints for the spool: %s", exc)
            return
        try:
            while not self._stop.wait(CHECKPOINT_PERIOD_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # a full disk: the backstop bounds the WAL
                    log.debug("spool checkpoint failed: %s", exc)
        finally:
            db.close()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def task_ids(self) -> set[str]:
        return set(self._ids)

    def add(self, results: list[m.TaskResult]) -> None:
        """Raises sqlite3.Error or OSError (disk full, read-only) having kept nothing."""
        rows = []
        for r in results:
            body = m.encode(m.Results(results=[r]))
            if len(body) >= BLOB_MIN_BYTES:
                self.blobs.write(r.task_id, body)
                rows.append((r.task_id, b"", 1))
            else:
                rows.append((r.task_id, body, 0))
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", rows)
        self._ids.update(r.task_id for r in results)
        self._in_files.update(t for t, _, in_file in rows if in_file)

    def remove(self, task_ids: Iterable[str]) -> None:
        ids = [t for t in task_ids if t in self._ids]
        if not ids:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM results WHERE task_id = ?", [(t,) for t in ids])
        self._ids.difference_update(ids)
        in_files = self._in_files.intersection(ids)
        self._in_files.difference_update(in_files)
        self.blobs.remove(in_files)  # a file left behind goes at the next open

    def _decode(self, task_id: str, body: bytes, in_file: int) -> list[m.TaskResult]:
        if in_file:
            try:
                body = self.blobs.read(task_id)
            except OSError as exc:
                log.error("the spooled result of task %s is unreadable: %s", task_id, exc)
                return [m.TaskResult(task_id=task_id, ok=False, error=m.ErrorInfo(
                    code="endpoint_error",
                    message=f"the endpoint lost the result from its spool: {exc}"))]
        msg = self._decoder.decode(body)
        assert isinstance(msg, m.Results)
        return list(msg.results)

    def get(self, task_ids: Iterable[str]) -> list[m.TaskResult]:
        out: list[m.TaskResult] = []
        ids = [t for t in task_ids if t in self._ids]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for task_id, body, in_file in self._db.execute(
                    f"SELECT task_id, body, in_file FROM results WHERE task_id IN ({marks})",
                    chunk):
                out.extend(self._decode(task_id, body, in_file))
        return out

    def batches(self, size: int = 500) -> Iterator[list[m.TaskResult]]:
        batch: list[m.TaskResult] = []
        for task_id, body, in_file in self._db.execute(
                "SELECT task_id, body, in_file FROM results"):
            batch.extend(self._decode(task_id, body, in_file))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self._stop.set()
        self._checkpointer.join(5)
        self._db.close()

