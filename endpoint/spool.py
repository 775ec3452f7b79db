"""Results kept on disk until the service acknowledges them (SQLite, WAL).

A result enters the spool before it is sent upstream and leaves it only on
``ResultsAck``; after a crash or a lost link the agent resends what is left.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from funcx_flows import messages as m
from funcx_flows.errors import EndpointError


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA journal_size_limit=16777216")  # WAL back to 16 MB
            self._db.execute("CREATE TABLE IF NOT EXISTS results "
                             "(task_id TEXT PRIMARY KEY, body BLOB NOT NULL)")
        except sqlite3.Error as exc:
            raise EndpointError(f"cannot open the result spool at {path}: {exc}") from exc
        self._decoder = m.Decoder(m.Results)
        self._ids: set[str] = {r[0] for r in self._db.execute("SELECT task_id FROM results")}

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def task_ids(self) -> set[str]:
        return set(self._ids)

    def add(self, results: list[m.TaskResult]) -> None:
        rows = [(r.task_id, m.encode(m.Results(results=[r]))) for r in results]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)
        self._ids.update(r.task_id for r in results)

    def remove(self, task_ids: Iterable[str]) -> None:
        ids = [t for t in task_ids if t in self._ids]
        if not ids:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM results WHERE task_id = ?", [(t,) for t in ids])
        self._ids.difference_update(ids)

    def get(self, task_ids: Iterable[str]) -> list[m.TaskResult]:
        out: list[m.TaskResult] = []
        ids = [t for t in task_ids if t in self._ids]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for (body,) in self._db.execute(
                    f"SELECT body FROM results WHERE task_id IN ({marks})", chunk):
                msg = self._decoder.decode(body)
                assert isinstance(msg, m.Results)
                out.extend(msg.results)
        return out

    def batches(self, size: int = 500) -> Iterator[list[m.TaskResult]]:
        batch: list[m.TaskResult] = []
        for (body,) in self._db.execute("SELECT body FROM results"):
            msg = self._decoder.decode(body)
            assert isinstance(msg, m.Results)
            batch.extend(msg.results)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self._db.close()
