r"""Durable trigger state (SQLite, WAL): what was seen, what was started, watermarks.

A file version (path, size, mtime) is recorded once; a run is created for it in
the same transaction that marks it batched, so a restart neither repeats nor
skips. Runs move queued -> running -> done, or back to queued with a later
``next_at`` after a failed start, or to failed after their last attempt (still
visible, and ``replay`` can queue them again)::

    queued --claim--> running --ok--> done
      ^                  |  \--error, attempts left--> queued (next_at later)
      |                  |   \-error, last attempt---> failed
      |                  \--process died (found on restart)--> interrupted | queued
      +---------------- replay (failed, interrupted, done) -------+

A Globus transfer task is decided once, durably: fired (``seen_tasks``, in the
transaction that queues its run) or rejected (``rejected_tasks``, with the rules
it was judged by, so that changed rules judge it again).

A run found ``running`` on restart was cut off by a crash: idempotent targets
(deployments, events) are started again; an in-process flow may already have
done its work, so it becomes ``interrupted`` (visible, replayable) instead of
silently running twice. A Prefect flow's marks (``flow_runs``) and the Prefect
API then tell whether it had finished (it is marked done) or not (safe to
replay); see ``recovery``.

(One module past 400 lines on purpose: each transition drawn above is one SQL
transaction here, and restart safety is reviewed by reading them side by side.)

One process at a time serves a trigger on a state database: ``claim_trigger``
takes an exclusive lock that the OS drops when the process dies (even kill -9).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from funcx_flows.errors import FuncxFlowsError

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    trigger TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    seen_at REAL NOT NULL, run_id TEXT,
    PRIMARY KEY (trigger, path, size, mtime_ns));
CREATE INDEX IF NOT EXISTS files_unbatched ON files (trigger, run_id, seen_at);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, trigger TEXT NOT NULL, context TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    error TEXT, result TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS runs_due ON runs (trigger, state, next_at);
CREATE TABLE IF NOT EXISTS marks (
    trigger TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (trigger, key));
CREATE TABLE IF NOT EXISTS seen_tasks (
    trigger TEXT NOT NULL, task_id TEXT NOT NULL, run_id TEXT NOT NULL,
    PRIMARY KEY (trigger, task_id));
CREATE TABLE IF NOT EXISTS rejected_tasks (
    trigger TEXT NOT NULL, task_id TEXT NOT NULL, rules TEXT NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (trigger, task_id));
CREATE TABLE IF NOT EXISTS listing_gaps (
    trigger TEXT NOT NULL, what TEXT NOT NULL, detail TEXT NOT NULL, noted_at REAL NOT NULL,
    PRIMARY KEY (trigger, what));
CREATE TABLE IF NOT EXISTS flow_runs (
    run_id TEXT PRIMARY KEY, flow_run_id TEXT, began_at REAL, finished_at REAL,
    verdict TEXT, detail TEXT, checked_at REAL);
"""

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
INTERRUPTED = "interrupted"
STATES = (DONE, RUNNING, QUEUED, FAILED, INTERRUPTED)


class TriggerAlreadyRunning(FuncxFlowsError):
    """Another process is serving this trigger on the same state database."""

    code = "trigger_already_running"
    http_status = 409


@dataclass(frozen=True)
class FileVersion:
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FlowRunMark:
    """What an in-process Prefect flow run wrote about itself (``began_at``,
    ``finished_at``) and, for a run cut off by a crash, what the check found."""

    run_id: str
    flow_run_id: str | None
    began_at: float | None
    finished_at: float | None
    verdict: str | None
    detail: str | None


@dataclass
class Run:
    run_id: str
    trigger: str
    context: dict[str, Any]
    state: str
    attempts: int
    next_at: float
    error: str | None
    created_at: float


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _txn(self) -> Any:
        store = self

        class _T:
            def __enter__(self) -> sqlite3.Connection:
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")
                return store._db

            def __exit__(self, exc_type: Any, *rest: Any) -> None:
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    store._lock.release()

        return _T()

    # --------------------------------------------------------------- files --

    def record_files(self, trigger: str, versions: Iterable[FileVersion]) -> list[FileVersion]:
        """Record file versions; returns those never seen before."""
        new = []
        now = time.time()
        with self._txn() as db:
            for v in versions:
                cur = db.execute("INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?, ?, NULL)",
                                 (trigger, v.path, v.size, v.mtime_ns, now))
                if cur.rowcount:
                    new.append(v)
        return new

    def known(self, trigger: str, v: FileVersion) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM files WHERE trigger=? AND path=? AND size=? AND mtime_ns=?",
                (trigger, v.path, v.size, v.mtime_ns)).fetchone()
        return row is not None

    def unbatched(self, trigger: str) -> list[tuple[FileVersion, float]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, seen_at FROM files WHERE trigger=? AND run_id IS "
                "NULL ORDER BY seen_at, path", (trigger,)).fetchall()
        return [(FileVersion(r[0], r[1], r[2]), r[3]) for r in rows]

    def batch(self, trigger: str, files: Sequence[FileVersion],
              context: dict[str, Any]) -> str:
        """Create a queued run for these files and mark them, atomically."""
        return self.batch_many(trigger, [(files, context)])[0]

    def batch_many(self, trigger: str,
                   batches: Sequence[tuple[Sequence[FileVersion], dict[str, Any]]]) -> list[str]:
        """Several batches in one transaction (a burst of files costs one commit)."""
        now = time.time()
        ids = [str(uuid.uuid4()) for _ in batches]
        with self._txn() as db:
            for run_id, (files, context) in zip(ids, batches, strict=True):
                db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, 0, ?, NULL, NULL, ?, ?)",
                           (run_id, trigger, json.dumps(context), QUEUED, now, now, now))
                db.executemany(
                    "UPDATE files SET run_id=? WHERE trigger=? AND path=? AND size=? "
                    "AND mtime_ns=?", [(run_id, trigger, f.path, f.size, f.mtime_ns)
                                       for f in files])
        return ids

    # ---------------------------------------------------------------- runs --

    def add_run(self, trigger: str, context: dict[str, Any],
                seen_task: str | None = None) -> str | None:
        """A queued run; with ``seen_task``, only if that task was not seen before."""
        run_id = str(uuid.uuid4())
        now = time.time()
        with self._txn() as db:
            if seen_task is not None:
                cur = db.execute("INSERT OR IGNORE INTO seen_tasks VALUES (?, ?, ?)",
                                 (trigger, seen_task, run_id))
                if not cur.rowcount:
                    return None
                db.execute("DELETE FROM rejected_tasks WHERE trigger=? AND task_id=?",
                           (trigger, seen_task))
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, 0, ?, NULL, NULL, ?, ?)",
                       (run_id, trigger, json.dumps(context), QUEUED, now, now, now))
        return run_id

    def seen_task(self, trigger: str, task_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM seen_tasks WHERE trigger=? AND task_id=?",
                                    (trigger, task_id)).fetchone() is not None

    def decided_tasks(self, trigger: str, task_ids: Sequence[str], rules: str) -> set[str]:
        """Those of ``task_ids`` already fired, or rejected under these ``rules``."""
        found: set[str] = set()
        for i in range(0, len(task_ids), 500):
            chunk = list(task_ids[i:i + 500])
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT task_id FROM seen_tasks WHERE trigger=? AND task_id IN ({marks}) "
                    f"UNION SELECT task_id FROM rejected_tasks WHERE trigger=? AND rules=? "
                    f"AND task_id IN ({marks})", (trigger, *chunk, trigger, rules, *chunk))
                found.update(str(r[0]) for r in rows)
        return found

    def reject_tasks(self, trigger: str, rejected: Sequence[tuple[str, str]],
                     rules: str) -> None:
        """Remember (task id, reason) pairs, so these tasks are never looked at again."""
        now = time.time()
        with self._txn() as db:
            db.executemany("INSERT OR REPLACE INTO rejected_tasks VALUES (?, ?, ?, ?, ?)",
                           [(trigger, t, rules, reason[:500], now) for t, reason in rejected])

    def transfer_counts(self) -> dict[str, dict[str, int]]:
        """Per trigger: transfer tasks fired and rejected."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for table, key in (("seen_tasks", "fired"), ("rejected_tasks", "rejected")):
                for trig, n in self._db.execute(
                        f"SELECT trigger, count(*) FROM {table} GROUP BY trigger"):
                    out.setdefault(str(trig), {})[key] = int(n)
        return out

    def note_gaps(self, trigger: str, gaps: Sequence[tuple[str, str]]) -> list[str]:
        """Record ranges a listing could not read whole; returns those new to the store."""
        new = []
        now = time.time()
        with self._txn() as db:
            for what, detail in gaps:
                cur = db.execute("UPDATE listing_gaps SET detail=? WHERE trigger=? AND what=?",
                                 (detail, trigger, what))
                if not cur.rowcount:
                    db.execute("INSERT INTO listing_gaps VALUES (?, ?, ?, ?)",
                               (trigger, what, detail, now))
                    new.append(what)
        return new

    def gaps(self) -> dict[str, list[tuple[str, str]]]:
        with self._lock:
            rows = self._db.execute("SELECT trigger, what, detail FROM listing_gaps "
                                    "ORDER BY trigger, what").fetchall()
        out: dict[str, list[tuple[str, str]]] = {}
        for trig, what, detail in rows:
            out.setdefault(str(trig), []).append((str(what), str(detail)))
        return out

    def due(self, trigger: str, limit: int) -> list[Run]:
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE trigger=? AND state=? AND next_at<=? "
                "ORDER BY next_at LIMIT ?", (trigger, QUEUED, time.time(), limit)).fetchall()
        return [self._run(r) for r in rows]

    @staticmethod
    def _run(r: Sequence[Any]) -> Run:
        return Run(run_id=r[0], trigger=r[1], context=json.loads(r[2]), state=r[3],
                   attempts=r[4], next_at=r[5], error=r[6], created_at=r[8])

    def _set(self, run_id: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in values)
        with self._txn() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE run_id=?", (*values.values(), run_id))

    def mark_running(self, run_id: str) -> None:
        with self._txn() as db:
            db.execute("UPDATE runs SET state=?, attempts=attempts+1, updated_at=? "
                       "WHERE run_id=?", (RUNNING, time.time(), run_id))

    def mark_done(self, run_id: str, result: str = "") -> None:
        self._set(run_id, state=DONE, result=result[:2000], error=None)

    def mark_retry(self, run_id: str, error: str, next_at: float) -> None:
        self._set(run_id, state=QUEUED, error=error[:4000], next_at=next_at)

    def mark_failed(self, run_id: str, error: str) -> None:
        self._set(run_id, state=FAILED, error=error[:4000])

    def recover(self, trigger: str, rerun: bool = True) -> int:
        """Runs of ``trigger`` left 'running' by a crash: queued again with ``rerun``
        (the target is idempotent), else marked interrupted for an operator to replay."""
        now = time.time()
        with self._txn() as db:
            if rerun:
                cur = db.execute("UPDATE runs SET state=?, next_at=?, updated_at=? "
                                 "WHERE trigger=? AND state=?",
                                 (QUEUED, now, now, trigger, RUNNING))
            else:
                cur = db.execute(
                    "UPDATE runs SET state=?, updated_at=?, error=? WHERE trigger=? AND state=?",
                    (INTERRUPTED, now, "the trigger stopped while this in-process run was in "
                     "progress; it may have done its work. `funcx-flows trigger replay "
                     "<run id>` starts it again", trigger, RUNNING))
            return int(cur.rowcount)

    def claim(self, trigger: str) -> Run | None:
        """Take the longest-due queued run and mark it running, atomically (in due
        order, which the index gives without sorting the whole queue)."""
        now = time.time()
        with self._txn() as db:
            row = db.execute(
                "UPDATE runs SET state=?, attempts=attempts+1, updated_at=? WHERE run_id = ("
                "SELECT run_id FROM runs WHERE trigger=? AND state=? AND next_at<=? "
                "ORDER BY next_at LIMIT 1) RETURNING *",
                (RUNNING, now, trigger, QUEUED, now)).fetchone()
        return None if row is None else self._run(row)

    def release(self, run_id: str) -> None:
        """Give back a claimed run that was never started."""
        with self._txn() as db:
            db.execute("UPDATE runs SET state=?, attempts=max(attempts-1, 0), updated_at=? "
                       "WHERE run_id=? AND state=?", (QUEUED, time.time(), run_id, RUNNING))

    def claim_trigger(self, trigger: str) -> IO[bytes]:
        """An exclusive lock on serving ``trigger`` with this database (held until closed)."""
        locks = self.path.parent / f"{self.path.name}.locks"
        locks.mkdir(exist_ok=True)
        handle = open(locks / f"{trigger}.lock", "a+b")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().decode(errors="replace").strip() or "another process"
            handle.close()
            raise TriggerAlreadyRunning(
                f"trigger {trigger!r} is already being served with {self.path} by {holder}; "
                "stop that `funcx-flows trigger run` first (two would start runs twice)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}".encode())
        handle.flush()
        return handle

    def in_flight(self, trigger: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM runs WHERE trigger=? AND state=?",
                                        (trigger, RUNNING)).fetchone()[0])

    def runs(self, trigger: str | None = None, states: Sequence[str] = (),
             limit: int = 100) -> list[Run]:
        q, args = "SELECT * FROM runs WHERE 1=1", list[Any]()
        if trigger:
            q += " AND trigger=?"
            args.append(trigger)
        if states:
            q += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        q += " ORDER BY updated_at DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [self._run(r) for r in self._db.execute(q, args).fetchall()]

    def counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT trigger, state, count(*) FROM runs GROUP BY trigger, state").fetchall()
        out: dict[str, dict[str, int]] = {}
        for trig, state, n in rows:
            out.setdefault(trig, {})[state] = n
        return out

    def requeue(self, run_id: str) -> None:
        self._set(run_id, state=QUEUED, next_at=time.time(), attempts=0)

    def find_runs(self, what: str) -> list[Run]:
        """Runs of exactly this run id, file path or transfer task id (oldest first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE run_id=? OR run_id IN (SELECT run_id FROM files "
                "WHERE path=?) OR run_id IN (SELECT run_id FROM seen_tasks WHERE task_id=?) "
                "ORDER BY created_at", (what, what, what)).fetchall()
        return [self._run(r) for r in rows]

    # --------------------------------------------------------------- marks --

    def marks(self, key: str) -> dict[str, str]:
        """The non-empty value of ``key`` for each trigger (e.g. its current problem)."""
        with self._lock:
            rows = self._db.execute("SELECT trigger, value FROM marks WHERE key=? AND value!=''",
                                    (key,)).fetchall()
        return {str(t): str(v) for t, v in rows}

    def backlog(self) -> dict[str, tuple[int, float | None]]:
        """Per trigger: files recorded in all, and when its oldest queued run was made."""
        with self._lock:
            files = self._db.execute("SELECT trigger, count(*) FROM files GROUP BY trigger"
                                     ).fetchall()
            oldest = self._db.execute("SELECT trigger, min(created_at) FROM runs WHERE state=? "
                                      "GROUP BY trigger", (QUEUED,)).fetchall()
        first = {str(t): float(at) for t, at in oldest}
        out = {str(t): (int(n), first.pop(str(t), None)) for t, n in files}
        out.update({t: (0, at) for t, at in first.items()})
        return out

    def waiting_files(self) -> dict[str, int]:
        """Complete files recorded but not yet in a run (a batch still filling)."""
        with self._lock:
            rows = self._db.execute("SELECT trigger, count(*) FROM files WHERE run_id IS NULL "
                                    "GROUP BY trigger").fetchall()
        return {str(t): int(n) for t, n in rows}

    def get_mark(self, trigger: str, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM marks WHERE trigger=? AND key=?",
                                   (trigger, key)).fetchone()
        return None if row is None else str(row[0])

    def set_mark(self, trigger: str, key: str, value: str) -> None:
        self.set_marks(trigger, {key: value})

    def set_marks(self, trigger: str, values: dict[str, str]) -> None:
        """Several marks in one transaction (a watermark and when it was reached)."""
        with self._txn() as db:
            db.executemany("INSERT OR REPLACE INTO marks VALUES (?, ?, ?)",
                           [(trigger, k, v) for k, v in values.items()])

    # ----------------------------------------------------------- flow runs --
    # Marks written by in-process Prefect flow runs (see triggers/recovery.py), so that
    # a run cut off by a crash can be told finished or not.

    def flow_run_began(self, run_id: str, flow_run_id: str) -> None:
        with self._txn() as db:
            db.execute("INSERT INTO flow_runs (run_id, flow_run_id, began_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (run_id) DO UPDATE SET flow_run_id=excluded.flow_run_id, "
                       "began_at=excluded.began_at, finished_at=NULL, verdict=NULL, detail=NULL",
                       (run_id, flow_run_id, time.time()))

    def flow_run_finished(self, run_id: str, flow_run_id: str) -> None:
        with self._txn() as db:
            db.execute("INSERT INTO flow_runs (run_id, flow_run_id, finished_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (run_id) DO UPDATE SET flow_run_id=excluded.flow_run_id, "
                       "finished_at=excluded.finished_at", (run_id, flow_run_id, time.time()))

    def set_verdict(self, run_id: str, verdict: str, detail: str) -> None:
        with self._txn() as db:
            db.execute("INSERT INTO flow_runs (run_id, verdict, detail, checked_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                       "verdict=excluded.verdict, detail=excluded.detail, "
                       "checked_at=excluded.checked_at", (run_id, verdict, detail, time.time()))

    def forget_flow_run(self, run_id: str) -> None:
        with self._txn() as db:
            db.execute("DELETE FROM flow_runs WHERE run_id=?", (run_id,))

    def flow_run_marks(self, run_ids: Sequence[str] = (), verdict: str | None = None,
                       limit: int = 100) -> list[FlowRunMark]:
        """Marks of these runs (all if none given), with this verdict if one is given;
        the most recently checked first."""
        q, args = "SELECT run_id, flow_run_id, began_at, finished_at, verdict, detail " \
                  "FROM flow_runs WHERE 1=1", list[Any]()
        if run_ids:
            q += f" AND run_id IN ({','.join('?' * len(run_ids))})"
            args.extend(run_ids)
        if verdict is not None:
            q += " AND verdict=?"
            args.append(verdict)
        q += " ORDER BY checked_at DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        return [FlowRunMark(*r) for r in rows]
