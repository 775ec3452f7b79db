"""Payloads and results over ``blobfiles.MIN_BYTES`` as files beside an SQLite database.

A task row says which of its bodies live in a file (the ``blobs`` column, bits
below); the column is then NULL. A file is written inside the transaction that
stores its row, and removed when that transaction does not commit
(``Transaction.files``). PostgreSQL keeps bodies in its rows, since its replicas
share no disk: then there is no folder and every body is small.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from funcx_flows.blobfiles import MIN_BYTES, BlobFolder
from funcx_flows.errors import StorageUnavailable

from ..db import tasks

log = logging.getLogger(__name__)

PAYLOAD_IN_FILE = 1  # bits of the tasks.blobs column
RESULT_IN_FILE = 2


def payload_key(task_id: str) -> str:
    return task_id + ".payload"


def result_key(task_id: str) -> str:
    return task_id + ".result"


def keys_of(task_id: str, flags: int) -> list[str]:
    """The files a task row with these ``blobs`` bits has."""
    return ([payload_key(task_id)] if flags & PAYLOAD_IN_FILE else []) + (
        [result_key(task_id)] if flags & RESULT_IN_FILE else [])


class Blobs:
    def __init__(self) -> None:
        self.folder: BlobFolder | None = None

    def open(self, database: Path, conn: Connection) -> None:
        """Use the folder beside an SQLite database; removes the files no row names
        (orphans of a crash or a rollback). Raises StorageUnavailable."""
        try:
            self.folder = BlobFolder(database.parent / (database.name + ".blobs"))
            if any(self.folder.path.iterdir()):
                self.folder.keep_only(key for tid, flags in conn.execute(
                    select(tasks.c.task_id, tasks.c.blobs).where(tasks.c.blobs != 0))
                    for key in keys_of(str(tid), flags))
        except OSError as exc:
            raise StorageUnavailable(f"cannot use the folder beside the database: {exc}"
                                     ) from exc

    def big(self, data: bytes | None) -> bool:
        """Whether ``data`` goes to a file."""
        return self.folder is not None and data is not None and len(data) >= MIN_BYTES

    def write(self, key: str, data: bytes, written: list[str]) -> None:
        """A body to its file, noted in ``written`` (a transaction's ``files``)."""
        assert self.folder is not None
        try:
            self.folder.write(key, data)
        except OSError as exc:
            why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise StorageUnavailable(
                f"the service cannot write beside its database ({why}); nothing was stored, "
                "try again later", cause=str(exc)) from exc
        written.append(key)

    def remove(self, keys: Iterable[str]) -> None:
        if self.folder is not None:
            self.folder.remove(keys)

    @staticmethod
    def payloads(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
        """The payload files of these rows (useless once their tasks finished)."""
        return (payload_key(r["task_id"]) for r in rows
                if (r.get("blobs") or 0) & PAYLOAD_IN_FILE)

    def load(self, rows: list[dict[str, Any]], column: str = "result") -> None:
        """Fill in ``column`` (result or payload) of rows that keep it in a file; a
        file that cannot be read leaves it None, and is logged."""
        if self.folder is None:
            return
        flag, key = ((RESULT_IN_FILE, result_key) if column == "result"
                     else (PAYLOAD_IN_FILE, payload_key))
        for r in rows:
            if (r.get("blobs") or 0) & flag and r.get(column) is None:
                try:
                    r[column] = self.folder.read(key(str(r["task_id"])))
                except OSError as exc:
                    log.error("the stored %s of task %s is unreadable: %s", column,
                              r["task_id"], exc)
