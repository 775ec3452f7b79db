r"""What the Globus transfer step remembers between runs, per transfer key.

A *key* names one transfer in the user's terms: by default the flow run, the
task and the request; or a key the user passes to resume across flow runs. For
each key the store keeps the request it was first used for (a later request
that differs is refused, never answered with the old transfer), the Globus
submission id (stored before submitting: Globus answers a repeated submission id
with the task it made, so a submit that is repeated after a crash or a 5xx
cannot start a second transfer), the task id once known, and how the latest
attempt ended. Each attempt is a *generation*; a new one gets a new submission
id::

    (none) --claim--> submitting --task id--> watching --ends--> ended(outcome)
                          ^                                         |
                          +-------- next attempt: restart ----------+

A record lives while a step watches its transfer, and ``ttl`` seconds after the
step last saw it. Every step run deletes the expired records, so nothing stays
behind per task run. One SQLite file under the funcx-flows home holds them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funcx_flows.errors import ConfigError

STORE_FILE = "transfer_keys.sqlite"
LEGACY_DIR = "transfers"  # one JSON file per task run, before keys expired

SCHEMA = """
CREATE TABLE IF NOT EXISTS transfer_keys (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, request TEXT NOT NULL,
    generation INTEGER NOT NULL, submission_id TEXT NOT NULL, task_id TEXT,
    outcome TEXT, summary TEXT, created_at REAL NOT NULL, seen_at REAL NOT NULL,
    expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS transfer_keys_expiry ON transfer_keys (expires_at);
"""
COLUMNS = ("key, fingerprint, request, generation, submission_id, task_id, outcome, summary, "
           "seen_at, expires_at")


@dataclass(frozen=True)
class TransferRequest:
    """What a transfer moves and how: the part of a step's arguments that a key stands for."""

    source_endpoint: str
    destination_endpoint: str
    items: tuple[tuple[str, str, bool], ...]
    label: str | None = None
    sync_level: str | None = "checksum"
    verify_checksum: bool = True

    @classmethod
    def build(cls, source_endpoint: str, destination_endpoint: str, items: Iterable[Any],
              **options: Any) -> TransferRequest:
        """``items``: (source, destination[, recursive]) tuples or dicts with those keys."""
        out = []
        for n, item in enumerate(items):
            try:
                if isinstance(item, dict):
                    src, dst = item["source"], item["destination"]
                    recursive = item.get("recursive", False)
                else:
                    src, dst, *rest = item
                    recursive = rest[0] if rest else False
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"transfer item {n} is not a (source, destination"
                                  f"[, recursive]) pair or a dict with those keys: {item!r}"
                                  ) from None
            out.append((str(src), str(dst), bool(recursive)))
        if not out:
            raise ConfigError("transfer needs at least one (source, destination) item")
        return cls(str(source_endpoint), str(destination_endpoint), tuple(out), **options)

    def as_json(self) -> str:
        return json.dumps({"source_endpoint": self.source_endpoint,
                           "destination_endpoint": self.destination_endpoint,
                           "items": [list(i) for i in self.items], "label": self.label,
                           "sync_level": self.sync_level,
                           "verify_checksum": self.verify_checksum},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TransferRequest:
        doc = json.loads(text)
        doc["items"] = tuple((str(s), str(d), bool(r)) for s, d, r in doc["items"])
        return cls(**doc)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.as_json().encode()).hexdigest()

    def differences(self, earlier: TransferRequest) -> list[str]:
        """How this request differs from ``earlier``, in words."""
        out = []
        for name in ("source_endpoint", "destination_endpoint", "label", "sync_level",
                     "verify_checksum"):
            was, now = getattr(earlier, name), getattr(self, name)
            if was != now:
                out.append(f"{name.replace('_', ' ')} (was {was!r}, now {now!r})")
        if earlier.items != self.items:
            at = next((n for n, (a, b) in enumerate(zip(earlier.items, self.items, strict=False))
                       if a != b), min(len(earlier.items), len(self.items)))
            was = earlier.items[at] if at < len(earlier.items) else "none"
            now = self.items[at] if at < len(self.items) else "none"
            out.append(f"items ({len(earlier.items)} before, {len(self.items)} now; item {at} "
                       f"was {was}, now {now})")
        return out


@dataclass(frozen=True)
class Record:
    key: str
    fingerprint: str
    request: str
    generation: int
    submission_id: str
    task_id: str | None
    outcome: str | None
    summary: dict[str, Any] | None
    seen_at: float
    expires_at: float

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


def _record(row: tuple[Any, ...]) -> Record:
    (key, fingerprint, request, generation, submission_id, task_id, outcome, summary,
     seen_at, expires_at) = row
    return Record(key, fingerprint, request, int(generation), submission_id, task_id, outcome,
                  json.loads(summary) if summary else None, float(seen_at), float(expires_at))


class KeyStore:
    """Transfer keys in one SQLite file (or in memory, for a step that has no key)."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # the requests name paths and endpoints: owner only
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self.clock = clock
        self._db = sqlite3.connect(":memory:" if path is None else str(path), timeout=30,
                                   isolation_level=None)
        self._db.executescript(SCHEMA)

    @classmethod
    def at_home(cls, home: Path) -> KeyStore:
        return cls(home / STORE_FILE)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def sweep(self) -> int:
        """Delete every expired record; returns how many."""
        with self._write() as db:
            return db.execute("DELETE FROM transfer_keys WHERE expires_at <= ?",
                              (self.clock(),)).rowcount

    def get(self, key: str) -> Record | None:
        row = self._db.execute(f"SELECT {COLUMNS} FROM transfer_keys WHERE key = ?",
                               (key,)).fetchone()
        return None if row is None else _record(row)

    def claim(self, key: str, request: TransferRequest, submission_id: str,
              ttl: float) -> Record:
        """The key's record, made with this request and submission id if it had none
        (a concurrent claim of the same key gets the first one's)."""
        now = self.clock()
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO transfer_keys (key, fingerprint, request, "
                       "generation, submission_id, created_at, seen_at, expires_at) "
                       "VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
                       (key, request.fingerprint(), request.as_json(), submission_id, now, now,
                        now + ttl))
        record = self.get(key)
        assert record is not None
        return record

    def restart(self, key: str, generation: int, submission_id: str, ttl: float) -> Record:
        """Begin the attempt after ``generation``, unless another run already did
        (then that run's attempt is returned)."""
        now = self.clock()
        with self._write() as db:
            db.execute("UPDATE transfer_keys SET generation = generation + 1, submission_id = ?,"
                       " task_id = NULL, outcome = NULL, summary = NULL, seen_at = ?,"
                       " expires_at = ? WHERE key = ? AND generation = ?",
                       (submission_id, now, now + ttl, key, generation))
        record = self.get(key)
        assert record is not None
        return record

    def _update(self, key: str, generation: int, ttl: float, sets: str = "",
                values: tuple[Any, ...] = ()) -> None:
        """Change the record of this attempt (not a later one) and keep it ``ttl`` more."""
        now = self.clock()
        with self._write() as db:
            db.execute(f"UPDATE transfer_keys SET {sets}seen_at = ?, expires_at = ? "
                       "WHERE key = ? AND generation = ?",
                       (*values, now, now + ttl, key, generation))

    def set_task(self, key: str, generation: int, task_id: str, ttl: float) -> None:
        self._update(key, generation, ttl, "task_id = ?, ", (task_id,))

    def touch(self, key: str, generation: int, ttl: float) -> None:
        """The step still watches this transfer: keep its record."""
        self._update(key, generation, ttl)

    def end(self, key: str, generation: int, outcome: str, ttl: float,
            summary: dict[str, Any] | None = None) -> None:
        self._update(key, generation, ttl, "outcome = ?, summary = ?, ",
                     (outcome, None if summary is None else json.dumps(summary)))

    def forget(self, key: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM transfer_keys WHERE key = ?", (key,))


def sweep_legacy(home: Path, ttl: float, now: float | None = None) -> int:
    """Delete the per-task-run state files older releases left under ``home/transfers``
    once they are older than ``ttl``; returns how many."""
    folder = home / LEGACY_DIR
    if not folder.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - ttl
    removed = 0
    for path in folder.glob("*.json"):
        try:
            if path.stat().st_mtime <= cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    with contextlib.suppress(OSError):
        folder.rmdir()  # only if empty
    return removed
