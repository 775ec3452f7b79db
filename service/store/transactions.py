"""Write transactions: one writer at a time on SQLite, the event loop's own connection,
and the sequence lock that keeps published records in sequence order.

A ``Transaction`` is handed to the code that works inside it (never found through a
thread-local): its connection, the rows it finished (to publish once committed),
the files it wrote (removed if it does not commit) and the payload files it made
useless (removed once it has). Its life, in ``Transactions.write``::

    write lock (SQLite) -> BEGIN -> work -> COMMIT -> rows handed to the publisher
                                      |                       -> sequence lock released
                                      `-- hold_sequence(): the sequence lock, taken by
                                          the first finish, before any row it numbers
    on an error: ROLLBACK, its files removed, the sequence lock released

Records must reach the result streams in sequence order (a client that saw a later
one and lost its stream resumes after it). So a transaction that numbers finished
tasks holds the sequence lock from its first number until its rows are handed over
after the commit: no other transaction numbers rows meanwhile, and the hand-over
(``publish_with``, the dispatcher's outbox) receives batches in order. The lock is
taken before the numbered rows are written, so no row lock is ever held while
waiting for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine

from .blobs import Blobs

log = logging.getLogger(__name__)

Publish = Callable[[list[dict[str, Any]]], None]


class Transaction:
    """One write transaction, passed to whatever works inside it."""

    __slots__ = ("_seq_lock", "conn", "files", "finished", "holds_sequence", "useless")

    def __init__(self, conn: Connection, seq_lock: threading.Lock) -> None:
        self.conn = conn
        self.finished: list[dict[str, Any]] = []  # published once committed
        self.files: list[str] = []  # blob keys written: removed unless committed
        self.useless: list[str] = []  # blob keys to remove once committed
        self.holds_sequence = False
        self._seq_lock = seq_lock

    def hold_sequence(self) -> None:
        """Take the sequence lock until this transaction's rows are handed over
        (idempotent). Call it before numbering rows."""
        if not self.holds_sequence:
            self._seq_lock.acquire()
            self.holds_sequence = True

    def release(self) -> None:
        if self.holds_sequence:
            self.holds_sequence = False
            self._seq_lock.release()


class Transactions:
    """Where the store's transactions begin and end."""

    def __init__(self, engine: Engine, blobs: Blobs) -> None:
        self.engine = engine
        self.blobs = blobs
        self.sqlite = engine.url.get_backend_name() == "sqlite"
        # SQLite has one writer at a time, and a writer that finds the lock taken
        # sleeps in its busy handler (1, 2, 5, 10 ms...). Writers queue here instead
        # and are woken the moment the lock is free. PostgreSQL locks rows: no queue.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.sqlite else contextlib.nullcontext())
        self._writer = 0  # SQLite: the thread in a write transaction
        self._pinned: tuple[int, Connection] | None = None
        self._seq_lock = threading.Lock()
        self._publish: Publish | None = None

    def pin_connection(self) -> None:
        """Keep an SQLite connection for the calling thread: the service's event loop,
        which stores small submissions and results inline. A pool check-out and
        check-in per transaction cost ~20 us there (about half of a one-task commit).
        Other threads, and PostgreSQL (whose check-out pings the server), use the pool."""
        if self.sqlite and self._pinned is None:
            self._pinned = (threading.get_ident(), self.engine.connect())

    def unpin_connection(self) -> None:
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            pinned[1].close()

    def publish_with(self, publish: Publish | None) -> None:
        """Where the rows of finished tasks go once committed (None: nowhere): one
        call per transaction, in sequence order, never two at once."""
        self._publish = publish

    @contextlib.contextmanager
    def write(self) -> Iterator[Transaction]:
        """A write transaction: committed at the end, rolled back on an error."""
        pinned = self._pinned
        me = threading.get_ident()
        if self._writer == me:  # (SQLite only) it would wait for itself for ever
            raise RuntimeError("a transaction within a transaction")
        tx: Transaction | None = None
        try:
            with self._write_lock:
                if self.sqlite:
                    self._writer = me
                try:
                    if pinned is not None and pinned[0] == me:
                        with pinned[1].begin():
                            tx = Transaction(pinned[1], self._seq_lock)
                            yield tx
                    else:
                        with self.engine.begin() as conn:
                            tx = Transaction(conn, self._seq_lock)
                            yield tx
                    self._hand_over(tx)
                finally:
                    self._writer = 0
        except BaseException:
            if tx is not None and tx.files:
                self.blobs.remove(tx.files)
            raise
        finally:
            if tx is not None:
                tx.release()
        if tx.useless:
            self.blobs.remove(tx.useless)

    def _hand_over(self, tx: Transaction) -> None:
        """Committed: the finished rows to the publisher, still under the sequence lock."""
        if tx.finished and self._publish is not None:
            try:
                self._publish(tx.finished)
            except Exception:  # committed: an error now must not undo its files
                log.exception("could not hand over %d finished tasks for publishing "
                              "(clients catch up by sequence number)", len(tx.finished))

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads: the loop's own (pinned) one on the loop thread."""
        pinned = self._pinned
        me = threading.get_ident()
        if pinned is not None and pinned[0] == me:
            try:
                yield pinned[1]
            finally:  # the read began a transaction (not within a write): end it, or
                # it holds a snapshot (and blocks the next BEGIN)
                if self._writer != me and pinned[1].in_transaction():
                    pinned[1].rollback()
        else:
            with self.engine.connect() as conn:
                yield conn
