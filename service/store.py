"""All reads and writes of the service's database, in whole-batch transactions.

Routes and the dispatcher call these methods; nothing else touches SQL. Every
query is scoped by the caller's user id, so one user can neither see nor use
another's functions, endpoints or tasks (they answer ``NotFound``).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError

from funcx_flows.blobfiles import MIN_BYTES as BLOB_MIN_BYTES
from funcx_flows.blobfiles import BlobFolder
from funcx_flows.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    StorageUnavailable,
)
from funcx_flows.messages import ErrorInfo, LogRecord, ResourceSpec, TaskResult, TaskSpec
from funcx_flows.service import lifecycle as lc
from funcx_flows.service import rawsql
from funcx_flows.service.db import (
    counters,
    create_schema,
    disk_problem,
    endpoint_links,
    endpoints,
    functions,
    tasks,
    tokens,
    users,
)
from funcx_flows.service.sharing import Sharing, check_group_ids

ALLOW_LIST_CACHE_S = 5.0

log = logging.getLogger(__name__)

_FINISH_COLUMNS = ("task_id", "function_id", "endpoint_id", "group_id", "owner_id", "state",
                   "attempts", "t_received", "t_waiting", "t_dispatched", "t_running", "blobs")
_TASK_COLUMNS = ("task_id", "owner_id", "function_id", "endpoint_id", "group_id", "state", "seq",
                 "payload", "resources", "attempts", "t_received", "t_waiting", "t_dispatched",
                 "memo_key", "blobs", "batch_pos")
_ACTIVE_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in sorted(lc.ACTIVE)))


# Batches up to this size insert first and look up taken ids only when one is
# (Store._insert_first); larger ones look every id up first, then insert in one go.
INSERT_FIRST_MAX = 8


class _Hot:
    """The statements of every submission and every result (see rawsql.py)."""

    def __init__(self, dialect: Dialect) -> None:
        active_by_ids = (f"SELECT {', '.join(_FINISH_COLUMNS)} FROM tasks "
                         f"WHERE task_id IN ({{ids}}) AND {_ACTIVE_SQL}")
        self.active_by_ids = rawsql.InStatement(active_by_ids, dialect)
        self.active_by_ids_of_endpoint = rawsql.InStatement(
            active_by_ids + " AND endpoint_id = :eid", dialect)
        self.owners_of_tasks = rawsql.InStatement(
            "SELECT task_id, owner_id FROM tasks WHERE task_id IN ({ids})", dialect)
        self.active_of_owner = rawsql.Statement(
            f"SELECT count(*) FROM tasks WHERE owner_id = :uid AND {_ACTIVE_SQL}", dialect)
        insert_task = (f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) "
                       f"VALUES ({', '.join(':' + c for c in _TASK_COLUMNS)})")
        self.insert_task = rawsql.Statement(insert_task, dialect)
        self.insert_task_unless_taken = rawsql.Statement(
            insert_task + " ON CONFLICT (task_id) DO NOTHING RETURNING task_id", dialect)
        self.next_seqs = rawsql.Statement(
            "UPDATE counters SET value = value + :n WHERE name = 'seq' RETURNING value", dialect)
        self.finish = rawsql.Statement(
            "UPDATE tasks SET state = :s, seq = :q, t_completed = :tc, result = :res, "
            "error = :err, stdout = :out, logs = :lg, attempts = :att, t_running = :tr, "
            "payload = NULL, "
            "blobs = (blobs & 1) | :bl WHERE task_id = :tid", dialect)
        self.user_of_token = rawsql.Statement(
            "SELECT u.user_id, u.name FROM tokens t JOIN users u ON u.user_id = t.user_id "
            "WHERE t.token_hash = :h AND t.revoked_at IS NULL", dialect)
        self.endpoint_of_link_token = rawsql.Statement(
            "SELECT endpoint_id FROM endpoints WHERE endpoint_id = :e "
            "AND link_token_hash = :h", dialect)
        self.revoked_since = rawsql.Statement(
            "SELECT token_hash FROM tokens WHERE revoked_at >= :since", dialect)
        self.finish_active_returning = rawsql.Statement(
            "UPDATE tasks SET state = :s, seq = :q, t_completed = :tc, result = :res, "
            "error = :err, stdout = :out, logs = :lg, attempts = :att, "
            "t_running = COALESCE(t_running, :tr), payload = NULL, blobs = (blobs & 1) | :bl "
            f"WHERE task_id = :tid AND endpoint_id = :eid AND {_ACTIVE_SQL} "
            f"RETURNING {', '.join(_FINISH_COLUMNS)}", dialect)


PAYLOAD_IN_FILE = 1  # bits of the tasks.blobs column
RESULT_IN_FILE = 2


def _payload_key(task_id: str) -> str:
    return task_id + ".payload"


def _result_key(task_id: str) -> str:
    return task_id + ".result"


def _blob_keys(task_id: str, flags: int) -> list[str]:
    return ([_payload_key(task_id)] if flags & PAYLOAD_IN_FILE else []) + (
        [_result_key(task_id)] if flags & RESULT_IN_FILE else [])


def _error_fields(err: ErrorInfo | None) -> dict[str, Any] | None:
    """A task's error as stored (a JSON column) and published. The pickled exception
    stays opaque: base64 text, which only the client decodes and unpickles."""
    if err is None:
        return None
    fields = {"code": err.code, "message": err.message, "remote_type": err.remote_type,
              "remote_traceback": err.remote_traceback}
    if err.exception:
        fields["exception"] = base64.b64encode(err.exception).decode("ascii")
    return fields


def _log_fields(res: TaskResult | None) -> list[dict[str, Any]] | None:
    """A task's log records as stored (a JSON column, NULL when none) and published."""
    if res is None or not res.logs:
        return None
    return [{"created": r.created, "level": r.level, "name": r.name, "message": r.message,
             "at": r.at} for r in res.logs]


class _Finished(threading.local):
    """The rows finished by the calling thread's transaction; None until it takes
    sequence numbers (and with them the store's sequence lock)."""

    rows: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    groups: frozenset[str] = frozenset()  # Globus group ids, when Globus Auth says


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bytes(data: Any) -> bytes | None:
    return None if data is None else bytes(data)  # a driver may hand out a memoryview


def _valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def task_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The public TaskRecord of docs/protocol.md from a tasks row (or dict like it).

    ``result`` is left as the stored bytes: the result stream's msgspec encoder
    writes bytes as base64 in C, and ``TaskRecord`` encodes it for REST answers.
    A 10 MB result costs ~30 ms less than with ``base64.b64encode`` here."""
    stamps = {state: row[col] for state, col in lc.TIMESTAMP_OF.items() if row.get(col)}
    stamps.pop(lc.SUCCESS, None)
    stamps.pop(lc.FAILED, None)
    stamps.pop(lc.CANCELLED, None)
    if row.get("t_completed"):
        stamps["completed"] = row["t_completed"]
    return {
        "task_id": row["task_id"],
        "function_id": row["function_id"],
        "endpoint_id": row["endpoint_id"],
        "group_id": row.get("group_id"),
        "state": row["state"],
        "seq": row.get("seq") or 0,
        "timestamps": {("received" if k == lc.RECEIVED else k): v for k, v in stamps.items()},
        "result": _bytes(row.get("result")) if row["state"] == lc.SUCCESS else None,
        "error": row.get("error"),
        "stdout": row.get("stdout") or "",
        "logs": row.get("logs") or [],
        "attempts": row.get("attempts") or 0,
    }


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._bodies: OrderedDict[str, bytes] = OrderedDict()  # function_id -> body
        self._bodies_lock = threading.Lock()
        self._owners: dict[tuple[str, str], str] = {}  # (kind, id) -> owner user id
        # endpoint id -> (read at, its allow-list of function ids; empty: all). Dropped
        # when this store writes the endpoint's metadata or deletes it; re-read after
        # ALLOW_LIST_CACHE_S, so that a change made through another service replica on the
        # same database holds within seconds (the endpoint checks its own list anyway)
        self._allowed: dict[str, tuple[float, frozenset[str]]] = {}
        self._memoized: dict[str, bool] = {}  # function id -> memoize
        self.sharing = Sharing(engine)
        self._hot = _Hot(engine.dialect)
        # SQLite has one writer at a time, and a writer that finds the lock taken
        # sleeps in its busy handler (1, 2, 5, 10 ms...). Writers queue here instead
        # and are woken the moment the lock is free. PostgreSQL locks rows: no queue.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if engine.url.get_backend_name() == "sqlite"
            else contextlib.nullcontext())
        self._pinned: tuple[int, Connection] | None = None
        # Transactions that finish tasks take sequence numbers under this lock, held
        # until their records went to ``_publish`` after the commit: records are
        # published in sequence order (see hub.Outbox). It is taken lazily, by
        # _next_seqs, which every such transaction calls before it writes a row that
        # others can see (so no row lock is ever held while waiting for it).
        self._seq_lock = threading.Lock()
        self._tx = _Finished()
        self._publish: Callable[[list[dict[str, Any]]], None] | None = None
        # SQLite: payloads and results over blobfiles.MIN_BYTES as files beside the
        # database (set up by create_schema); PostgreSQL keeps them in its rows, since
        # its replicas share no disk
        self._blobs: BlobFolder | None = None

    def pin_connection(self) -> None:
        """Keep an SQLite connection for the calling thread's writes: the service's event
        loop, which stores small submissions and results inline. A pool check-out and
        check-in per transaction cost ~20 us there (about half of a one-task commit).
        Other threads, and PostgreSQL (whose check-out pings the server), use the pool."""
        if self.engine.url.get_backend_name() == "sqlite" and self._pinned is None:
            self._pinned = (threading.get_ident(), self.engine.connect())

    def unpin_connection(self) -> None:
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            pinned[1].close()

    def publish_with(self, publish: Callable[[list[dict[str, Any]]], None] | None) -> None:
        """Where the rows of finished tasks go once committed (None: nowhere): one
        call per transaction, in sequence order, never two at once."""
        self._publish = publish

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction (committed at the end, rolled back on an error); the
        tasks it finished are published after the commit."""
        assert self._tx.rows is None, "a transaction within a transaction"
        pinned = self._pinned
        try:
            with self._write_lock:
                if pinned is not None and pinned[0] == threading.get_ident():
                    with pinned[1].begin():
                        yield pinned[1]
                else:
                    with self.engine.begin() as conn:
                        yield conn
                if self._tx.rows and self._publish is not None:
                    try:
                        self._publish(self._tx.rows)
                    except Exception:  # committed: an error now must not undo its files
                        log.exception("could not hand over %d finished tasks for "
                                      "publishing (clients catch up by sequence number)",
                                      len(self._tx.rows))
        finally:
            if self._tx.rows is not None:
                self._tx.rows = None
                self._seq_lock.release()

    def probe_write(self) -> None:
        """Raise when the database cannot be written (readiness): a write transaction
        that changes nothing (a DBAPIError when the server is away or refuses), and
        for SQLite a look at its disk (a full one may still take a no-op write)."""
        problem = disk_problem(self.engine)
        if problem:
            raise StorageUnavailable(f"the service cannot write its database: {problem}")
        with self._begin() as conn:
            conn.execute(update(counters).where(counters.c.name == "seq")
                         .values(value=counters.c.value))

    def create_schema(self) -> None:
        try:
            create_schema(self.engine)
        except DBAPIError as exc:
            url = self.engine.url.render_as_string(hide_password=True)
            why = "; ".join(x for x in (str(exc.orig).strip(), disk_problem(self.engine)) if x)
            raise StorageUnavailable(f"cannot set up the database at {url}: {why}") from exc
        database = self.engine.url.database
        if self.engine.url.get_backend_name() == "sqlite" and database and database != ":memory:":
            path = Path(database)
            try:
                self._blobs = BlobFolder(path.parent / (path.name + ".blobs"))
                if any(self._blobs.path.iterdir()):  # orphans of a crash or a rollback
                    with self.engine.connect() as conn:
                        self._blobs.keep_only(key for tid, flags in conn.execute(
                            select(tasks.c.task_id, tasks.c.blobs).where(tasks.c.blobs != 0))
                            for key in _blob_keys(str(tid), flags))
            except OSError as exc:
                raise StorageUnavailable(f"cannot use the folder beside the database: {exc}"
                                         ) from exc

    @contextlib.contextmanager
    def _new_files(self) -> Iterator[list[str]]:
        """The keys of files written for a transaction (``_write_blob``): removed when
        it does not commit. Enter it before the transaction."""
        written: list[str] = []
        try:
            yield written
        except BaseException:
            if self._blobs is not None and written:
                self._blobs.remove(written)
            raise

    def _write_blob(self, key: str, data: bytes, written: list[str]) -> None:
        """A payload or result to its file, within a transaction that removes it if
        the transaction does not commit."""
        assert self._blobs is not None
        try:
            self._blobs.write(key, data)
        except OSError as exc:
            why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise StorageUnavailable(
                f"the service cannot write beside its database ({why}); nothing was stored, "
                "try again later", cause=str(exc)) from exc
        written.append(key)

    def _file_it(self, data: bytes | None) -> bool:
        return self._blobs is not None and data is not None and len(data) >= BLOB_MIN_BYTES

    def _drop_payload_files(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """After a commit that finished tasks: their payloads are no longer kept."""
        if self._blobs is not None:
            self._blobs.remove(_payload_key(r["task_id"]) for r in rows
                               if (r.get("blobs") or 0) & PAYLOAD_IN_FILE)

    def _load_blobs(self, rows: list[dict[str, Any]], column: str = "result") -> None:
        """Fill in ``column`` (result or payload) of rows that keep it in a file."""
        flag, key = ((RESULT_IN_FILE, _result_key) if column == "result"
                     else (PAYLOAD_IN_FILE, _payload_key))
        for r in rows:
            if (r.get("blobs") or 0) & flag and r.get(column) is None and self._blobs:
                try:
                    r[column] = self._blobs.read(key(str(r["task_id"])))
                except OSError as exc:
                    log.error("the stored %s of task %s is unreadable: %s", column,
                              r["task_id"], exc)

    # ---------------------------------------------------------- users/tokens --

    def ensure_user(self, name: str) -> User:
        with self._begin() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
            if row is not None:
                return User(row["user_id"], row["name"])
            user = User(str(uuid.uuid4()), name)
            conn.execute(insert(users).values(user_id=user.user_id, name=name,
                                              created_at=time.time()))
            return user

    def user_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(users)).scalar_one())

    def create_token(self, user: User, name: str) -> tuple[str, str]:
        token = "fxf_" + secrets.token_urlsafe(32)
        token_id = str(uuid.uuid4())
        with self._begin() as conn:
            conn.execute(insert(tokens).values(
                token_id=token_id, user_id=user.user_id, name=name,
                token_hash=hash_token(token), created_at=time.time()))
        return token_id, token

    def authenticate(self, token: str) -> User | None:
        """The token's user, or None when it is unknown or revoked. Never cached: a
        revoke, by the API, the CLI or another replica, holds for the next request
        (one indexed read: ~7 us on the loop's SQLite connection)."""
        return self.user_of_digest(hash_token(token))

    def user_of_digest(self, digest: str) -> User | None:
        with self._reading() as conn:
            rows = rawsql.execute(conn, self._hot.user_of_token, {"h": digest})
        return None if not rows else User(str(rows[0][0]), str(rows[0][1]))

    def revoked_since(self, since: float) -> list[str]:
        """Digests of the tokens revoked at or after ``since`` (by anyone: a result
        stream opened with one of them is closed)."""
        with self._reading() as conn:
            return [str(r[0]) for r in rawsql.execute(conn, self._hot.revoked_since,
                                                      {"since": since})]

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for a read: the loop's own (pinned) one on the loop thread."""
        pinned = self._pinned
        if pinned is not None and pinned[0] == threading.get_ident():
            yield pinned[1]
            if pinned[1].in_transaction():  # a read began one: end it, or it holds a snapshot
                pinned[1].rollback()
        else:
            with self.engine.connect() as conn:
                yield conn

    def list_tokens(self, user: User | None) -> list[dict[str, Any]]:
        q = (select(tokens.c.token_id, tokens.c.name, tokens.c.created_at, tokens.c.revoked_at,
                    users.c.name.label("user"))
             .join(users, users.c.user_id == tokens.c.user_id).order_by(tokens.c.created_at))
        if user is not None:
            q = q.where(tokens.c.user_id == user.user_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def revoke_token(self, token_id: str, user: User | None) -> str:
        """Revoke a token (of ``user``, if given); its digest."""
        cond = tokens.c.token_id == token_id
        if user is not None:
            cond = and_(cond, tokens.c.user_id == user.user_id)
        with self._begin() as conn:
            digest = conn.execute(update(tokens).where(cond, tokens.c.revoked_at.is_(None))
                                  .values(revoked_at=time.time())
                                  .returning(tokens.c.token_hash)).scalar()
        if digest is None:
            raise NotFound(f"no active token {token_id!r}")
        return str(digest)

    # ------------------------------------------------------------- functions --

    def register_function(self, user: User, name: str, description: str,
                          body: bytes, memoize: bool = False) -> tuple[str, bool]:
        # A memoized registration is another function than the plain one of the same body.
        digest = hashlib.sha256((b"memoize\0" if memoize else b"") + body).hexdigest()
        q = select(functions.c.function_id).where(
            functions.c.owner_id == user.user_id, functions.c.body_hash == digest)
        with self._begin() as conn:
            existing = conn.execute(q).scalar()
            if existing is not None:
                return str(existing), False
            function_id = str(uuid.uuid4())
            try:
                conn.execute(insert(functions).values(
                    function_id=function_id, owner_id=user.user_id, name=name,
                    description=description, body_hash=digest, body=body,
                    created_at=time.time(), memoize=memoize))
            except IntegrityError:  # a concurrent registration of the same body won
                conn.rollback()
                with self.engine.connect() as c2:
                    return str(c2.execute(q).scalar_one()), False
        return function_id, True

    def get_function(self, user: User, function_id: str) -> dict[str, Any]:
        """A function the user owns or that is shared with them (``owned`` says which)."""
        return self._visible(user, "function", function_id)

    def list_functions(self, user: User, shared: bool = False) -> list[dict[str, Any]]:
        """The user's functions; with ``shared``, also those shared with them."""
        cols = [functions.c.function_id, functions.c.name, functions.c.description,
                functions.c.body_hash, functions.c.created_at, functions.c.memoize,
                functions.c.owner_id]
        return self._list(user, "function", cols, shared)

    def delete_function(self, user: User, function_id: str) -> None:
        self._owned(user, "function", function_id, "delete it")
        with self._begin() as conn:
            conn.execute(delete(functions).where(functions.c.function_id == function_id))
            self.sharing.drop(conn, "function", function_id)
        self._owners.pop(("function", function_id), None)
        with self._bodies_lock:
            self._bodies.pop(function_id, None)

    def function_bodies(self, function_ids: Iterable[str]) -> dict[str, bytes]:
        wanted = set(function_ids)
        out: dict[str, bytes] = {}
        with self._bodies_lock:
            for fid in wanted:
                body = self._bodies.get(fid)
                if body is not None:
                    out[fid] = body
        missing = wanted - out.keys()
        if missing:
            with self.engine.connect() as conn:
                rows = conn.execute(select(functions.c.function_id, functions.c.body)
                                    .where(functions.c.function_id.in_(missing)))
                fetched = {str(r[0]): bytes(r[1]) for r in rows}
            out.update(fetched)
            with self._bodies_lock:
                self._bodies.update(fetched)
                while len(self._bodies) > 1024:
                    self._bodies.popitem(last=False)
        return out

    # ------------------------------------------------------------- endpoints --

    def register_endpoint(self, user: User, name: str, public_key: str,
                          meta: Mapping[str, Any]) -> tuple[str, bool]:
        with self._begin() as conn:
            other = conn.execute(select(endpoints.c.endpoint_id, endpoints.c.owner_id,
                                        endpoints.c.name)
                                 .where(endpoints.c.public_key == public_key)).first()
            if other is not None and (other[1] != user.user_id or other[2] != name):
                raise Conflict("this public key already belongs to another endpoint")
            row = conn.execute(select(endpoints.c.endpoint_id).where(
                endpoints.c.owner_id == user.user_id, endpoints.c.name == name)).first()
            if row is not None:
                conn.execute(update(endpoints).where(endpoints.c.endpoint_id == row[0])
                             .values(public_key=public_key, metadata=dict(meta)))
                self._allowed.pop(str(row[0]), None)
                return str(row[0]), False
            endpoint_id = str(uuid.uuid4())
            conn.execute(insert(endpoints).values(
                endpoint_id=endpoint_id, owner_id=user.user_id, name=name,
                public_key=public_key, metadata=dict(meta), created_at=time.time()))
        return endpoint_id, True

    def new_link_token(self, endpoint_id: str) -> str:
        """A fresh secret for the endpoint's WebSocket link (the last one stops
        working): it proves nothing but being this endpoint."""
        token = "fxe_" + secrets.token_urlsafe(32)
        with self._begin() as conn:
            conn.execute(update(endpoints).where(endpoints.c.endpoint_id == endpoint_id)
                         .values(link_token_hash=hash_token(token)))
        return token

    def link_token_valid(self, endpoint_id: str, token: str) -> bool:
        with self._reading() as conn:
            return bool(rawsql.execute(conn, self._hot.endpoint_of_link_token,
                                       {"e": endpoint_id, "h": hash_token(token)}))

    def get_endpoint(self, user: User, endpoint_id: str) -> dict[str, Any]:
        """An endpoint the user owns or that is shared with them (``owned`` says which)."""
        return self._visible(user, "endpoint", endpoint_id)

    def list_endpoints(self, user: User, shared: bool = False) -> list[dict[str, Any]]:
        """The user's endpoints; with ``shared``, also those shared with them."""
        return self._list(user, "endpoint", list(endpoints.c), shared)

    def delete_endpoint(self, user: User, endpoint_id: str) -> list[dict[str, Any]]:
        """Delete an endpoint; its unfinished tasks fail. Returns their records."""
        self._owned(user, "endpoint", endpoint_id, "delete it")
        err = ErrorInfo(code="not_found", message=f"endpoint {endpoint_id} was deleted")
        with self._begin() as conn:
            ids = [r[0] for r in conn.execute(select(tasks.c.task_id).where(
                tasks.c.endpoint_id == endpoint_id, tasks.c.state.in_(lc.ACTIVE)))]
            records = self._finish(conn, ids, lc.FAILED, {i: err for i in ids})
            conn.execute(delete(endpoint_links).where(
                endpoint_links.c.endpoint_id == endpoint_id))
            conn.execute(delete(endpoints).where(endpoints.c.endpoint_id == endpoint_id))
            self.sharing.drop(conn, "endpoint", endpoint_id)
        self._owners.pop(("endpoint", endpoint_id), None)
        self._allowed.pop(endpoint_id, None)
        return records

    # --------------------------------------------------------------- sharing --

    @staticmethod
    def _table(kind: str) -> tuple[Any, Any]:
        table = functions if kind == "function" else endpoints
        return table, (table.c.function_id if kind == "function" else table.c.endpoint_id)

    def _visible(self, user: User, kind: str, object_id: str) -> dict[str, Any]:
        table, col = self._table(kind)
        row = None
        if _valid_uuid(object_id):
            with self.engine.connect() as conn:
                row = conn.execute(select(table).where(col == object_id)).mappings().first()
                if row is not None and row["owner_id"] != user.user_id and not \
                        self.sharing.usable(conn, kind, {object_id}, user.user_id, user.groups):
                    row = None
        if row is None:
            raise NotFound(f"no {kind} {object_id!r} is visible to you")
        return {**row, "owned": row["owner_id"] == user.user_id}

    def _owned(self, user: User, kind: str, object_id: str, action: str) -> dict[str, Any]:
        row = self._visible(user, kind, object_id)
        if not row["owned"]:
            raise PermissionDenied(f"{kind} {object_id} is shared with you; only its owner "
                                   f"can {action}")
        return row

    def _list(self, user: User, kind: str, cols: list[Any], shared: bool
              ) -> list[dict[str, Any]]:
        table, col = self._table(kind)
        with self.engine.connect() as conn:
            where = table.c.owner_id == user.user_id
            if shared:
                ids = self.sharing.shared_ids(conn, kind, user.user_id, user.groups, True)
                where = or_(where, col.in_(ids))
            rows = conn.execute(select(*cols).where(where)
                                .order_by(table.c.created_at)).mappings()
            return [{**r, "owned": r["owner_id"] == user.user_id} for r in rows]

    def get_sharing(self, user: User, kind: str, object_id: str) -> dict[str, Any]:
        self._owned(user, kind, object_id, "see whom it is shared with")
        with self.engine.connect() as conn:
            out: dict[str, Any] = self.sharing.describe(conn, kind, object_id)
        return out

    def set_sharing(self, user: User, kind: str, object_id: str, *, public: bool,
                    user_names: Sequence[str], groups: Sequence[str]) -> dict[str, Any]:
        """Replace whom a thing of the user's is shared with. Users are named as the
        service knows them; ``globus:<username>`` names need not have signed in yet."""
        self._owned(user, kind, object_id, "share it")
        group_ids = check_group_ids(groups)
        for name in user_names:
            if name.startswith("globus:"):
                self.ensure_user(name)
        with self._begin() as conn:
            found = {str(n): str(i) for n, i in conn.execute(
                select(users.c.name, users.c.user_id).where(users.c.name.in_(set(user_names))))}
            unknown = sorted(set(user_names) - found.keys())
            if unknown:
                raise InvalidRequest(f"no user named {unknown[0]!r}", field="users")
            self.sharing.replace(conn, kind, object_id, public=public,
                                 user_ids=[i for i in found.values() if i != user.user_id],
                                 groups=group_ids)
            out: dict[str, Any] = self.sharing.describe(conn, kind, object_id)
        self.sharing.forget()
        return out

    def endpoint_keys(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {str(r[0]): str(r[1]) for r in
                    conn.execute(select(endpoints.c.endpoint_id, endpoints.c.public_key))}

    def touch_endpoint(self, endpoint_id: str) -> None:
        with self._begin() as conn:
            conn.execute(update(endpoints).where(endpoints.c.endpoint_id == endpoint_id)
                         .values(last_seen=time.time()))

    def queue_depths(self, endpoint_id: str) -> dict[str, int]:
        q = (select(tasks.c.state, func.count()).where(
            tasks.c.endpoint_id == endpoint_id, tasks.c.state.in_(lc.ACTIVE))
             .group_by(tasks.c.state))
        with self.engine.connect() as conn:
            return {str(s): int(n) for s, n in conn.execute(q)}

    # ----------------------------------------------------------------- tasks --

    def submit(self, user: User, items: Sequence[Mapping[str, Any]],
               online: set[str], max_in_flight: int = 0
               ) -> tuple[list[str], dict[str, list[TaskSpec]], list[dict[str, Any]]]:
        """Insert a batch (all or nothing). Returns the task ids in order; per endpoint,
        the specs of new tasks on online endpoints (to send now); and the rows of tasks
        answered at once from a memoized result (to publish)."""
        now = time.time()
        fids = {str(t["function_id"]) for t in items}
        eids = {str(t["endpoint_id"]) for t in items}
        for fid in fids:
            if not _valid_uuid(fid):
                raise NotFound(f"no function {fid!r} is visible to you")
        for eid in eids:
            if not _valid_uuid(eid):
                raise NotFound(f"no endpoint {eid!r} is visible to you")
        ids = [str(t.get("task_id") or uuid.uuid4()) for t in items]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("a batch repeats a task_id")
        for tid in ids:
            if not _valid_uuid(tid):
                raise InvalidRequest(f"task_id {tid!r} is not a UUID")
        for attempt in (1, 2):
            try:
                with self._new_files() as written:
                    ids, rows, finished = self._submit(user, ids, items, online,
                                                       max_in_flight, now, written)
                break
            except IntegrityError:
                # the same task ids stored at the same moment by another process (an
                # idempotent resubmission through two replicas): looked up again,
                # they are found and skipped
                if attempt == 2:
                    raise
        self._drop_payload_files(finished)
        done = {r["task_id"] for r in finished}
        bodies = self.function_bodies({r["function_id"] for r in rows})
        to_send: dict[str, list[TaskSpec]] = {}
        for r in rows:
            if r["state"] == lc.DISPATCHED and r["task_id"] not in done:
                to_send.setdefault(r["endpoint_id"], []).append(self._spec(r, bodies))
        return ids, to_send, finished

    def _submit(self, user: User, ids: list[str], items: Sequence[Mapping[str, Any]],
                online: set[str], max_in_flight: int, now: float, written: list[str]
                ) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
        fids = {str(t["function_id"]) for t in items}
        eids = {str(t["endpoint_id"]) for t in items}
        with self._begin() as conn:
            if max_in_flight and conn.dialect.name == "postgresql":
                # replicas count a user's tasks one submission at a time: two that
                # counted at once could both pass the limit (SQLite writes one at a time)
                conn.execute(select(users.c.user_id).where(
                    users.c.user_id == user.user_id).with_for_update())
            self._check_usable(conn, user, "function", fids)
            self._check_usable(conn, user, "endpoint", eids)
            self._check_allowed(conn, items)
            rows = [self._task_row(user, tid, t, online, now, pos)
                    for pos, (tid, t) in enumerate(zip(ids, items, strict=True))]
            for r in rows:
                if self._file_it(r["payload"]):
                    r["blobs"] = PAYLOAD_IN_FILE
            memo = self._memo_keys(conn, rows)
            rows = (self._insert_first(conn, user, rows) if len(rows) <= INSERT_FIRST_MAX
                    else self._insert_checked(conn, user, rows))
            for r in rows:
                if r["blobs"] & PAYLOAD_IN_FILE:
                    self._write_blob(_payload_key(r["task_id"]), r["payload"], written)
            if max_in_flight:  # counted with the new rows (a refusal rolls them back)
                active = rawsql.execute(conn, self._hot.active_of_owner,
                                        {"uid": user.user_id})[0][0]
                if active > max_in_flight:
                    raise RateLimited(
                        f"limit of {max_in_flight} tasks in flight per user reached "
                        f"({active - len(rows)} unfinished, {len(rows)} more submitted)",
                        limit="max_tasks_in_flight")
            inserted = {r["task_id"] for r in rows}
            memo = {t: k for t, k in memo.items() if t in inserted}
            finished = self._answer_from_memo(conn, user, rows, memo, written)
        return ids, rows, finished

    @staticmethod
    def _task_row(user: User, task_id: str, t: Mapping[str, Any], online: set[str],
                  now: float, pos: int) -> dict[str, Any]:
        eid = str(t["endpoint_id"])
        state = lc.DISPATCHED if eid in online else lc.WAITING
        return {
            "task_id": task_id, "owner_id": user.user_id,
            "function_id": str(t["function_id"]), "endpoint_id": eid,
            "group_id": t.get("group_id"), "state": state, "seq": 0,
            "payload": t["payload"], "resources": t.get("resources"),
            "attempts": 0, "t_received": now, "t_waiting": now,
            "t_dispatched": now if state == lc.DISPATCHED else None, "memo_key": None,
            "blobs": 0, "batch_pos": pos,
        }

    @staticmethod
    def _insert_params(row: Mapping[str, Any]) -> dict[str, Any]:
        res = row["resources"]
        return {**row, "resources": None if res is None else json.dumps(res),
                "payload": None if row["blobs"] & PAYLOAD_IN_FILE else row["payload"]}

    def _insert_first(self, conn: Any, user: User,
                      rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A small batch: each row inserted unless its id is taken (one statement
        each, where looking the ids up first took one more); a taken id is looked up
        afterwards: the user's own (a resubmission) is skipped, another's refused
        (the transaction rolls back). Returns the rows inserted."""
        fresh, taken = [], []
        for r in rows:
            if rawsql.execute(conn, self._hot.insert_task_unless_taken, self._insert_params(r)):
                fresh.append(r)
            else:
                taken.append(r["task_id"])
        if taken:
            self._check_task_ids_own(conn, user, taken)
        return fresh

    def _insert_checked(self, conn: Any, user: User,
                        rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A large batch: the ids looked up first, the new rows inserted in one go."""
        existing = self._check_task_ids_own(conn, user, [r["task_id"] for r in rows])
        fresh = [r for r in rows if r["task_id"] not in existing]
        if fresh:
            rawsql.execute_many(conn, self._hot.insert_task,
                                (self._insert_params(r) for r in fresh))
        return fresh

    def _check_task_ids_own(self, conn: Any, user: User, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` exist; Conflict if any belongs to another user."""
        existing = {str(r[0]): str(r[1])
                    for r in rawsql.select_in(conn, self._hot.owners_of_tasks, ids)}
        if any(owner != user.user_id for owner in existing.values()):
            raise Conflict("a task_id in this batch is already in use")
        return set(existing)

    def _memo_keys(self, conn: Any, rows: list[dict[str, Any]]) -> dict[str, str]:
        """Set ``memo_key`` on rows of memoized functions; returns task id -> key."""
        unknown = {r["function_id"] for r in rows} - self._memoized.keys()
        if unknown:
            for fid, flag in conn.execute(select(functions.c.function_id, functions.c.memoize)
                                          .where(functions.c.function_id.in_(unknown))):
                self._memoized[str(fid)] = bool(flag)
        keys = {}
        for r in rows:
            if self._memoized.get(r["function_id"]):
                r["memo_key"] = hashlib.sha256(r["function_id"].encode() + b"\0"
                                               + r["payload"]).hexdigest()
                keys[r["task_id"]] = r["memo_key"]
            else:
                r["memo_key"] = None
        return keys

    def _answer_from_memo(self, conn: Any, user: User, rows: list[dict[str, Any]],
                          memo: dict[str, str], written: list[str]) -> list[dict[str, Any]]:
        """Finish, with the stored result, new tasks whose call already succeeded."""
        if not memo:
            return []
        # the state is checked here, not in SQL: with it there, SQLite's planner took
        # the (owner, state) index and read every success the user had kept
        found = [dict(r) for r in conn.execute(
            select(tasks.c.task_id, tasks.c.memo_key, tasks.c.result, tasks.c.stdout,
                   tasks.c.logs, tasks.c.state, tasks.c.blobs).where(
                tasks.c.owner_id == user.user_id, tasks.c.memo_key.in_(set(memo.values()))))
            .mappings() if r["state"] == lc.SUCCESS]
        self._load_blobs(found)
        hits = {str(r["memo_key"]): r for r in found if r["result"] is not None}
        answers = {tid: TaskResult(task_id=tid, ok=True, data=bytes(hits[key]["result"]),
                                   stdout=hits[key]["stdout"] or "", attempts=0,
                                   logs=[LogRecord(**x) for x in hits[key]["logs"] or ()])
                   for tid, key in memo.items() if key in hits}
        return self._finish(conn, list(answers), lc.SUCCESS, {}, answers, written=written)

    def _check_usable(self, conn: Any, user: User, kind: str, ids: set[str]) -> None:
        """Raise NotFound unless every id is the user's or shared with them (owners
        never change; deleted things leave the cache when deleted)."""
        unknown = {i for i in ids if self._owners.get((kind, i)) != user.user_id}
        if not unknown:
            return
        table, col = self._table(kind)
        found = {str(r[0]) for r in conn.execute(select(col).where(
            col.in_(unknown), table.c.owner_id == user.user_id))}
        for i in found:
            self._owners[(kind, i)] = user.user_id
        rest = unknown - found
        if rest:
            rest -= self.sharing.usable(conn, kind, rest, user.user_id, user.groups)
        if rest:
            raise NotFound(f"no {kind} {sorted(rest)[0]!r} is visible to you")

    def _check_allowed(self, conn: Any, items: Sequence[Mapping[str, Any]]) -> None:
        """An endpoint registered with an allow-list of function ids runs only those."""
        now = time.monotonic()
        stale = (-ALLOW_LIST_CACHE_S, frozenset[str]())
        eids = {eid for eid in (str(t["endpoint_id"]) for t in items)
                if now - self._allowed.get(eid, stale)[0] >= ALLOW_LIST_CACHE_S}
        if eids:
            for eid, meta in conn.execute(select(endpoints.c.endpoint_id, endpoints.c.metadata)
                                          .where(endpoints.c.endpoint_id.in_(eids))):
                self._allowed[str(eid)] = (now, frozenset(
                    (meta.get("allowed_functions") or ()) if isinstance(meta, dict) else ()))
        for t in items:
            ok = self._allowed.get(str(t["endpoint_id"]), (0.0, frozenset()))[1]
            if ok and str(t["function_id"]) not in ok:
                raise PermissionDenied(
                    f"endpoint {t['endpoint_id']} does not allow function {t['function_id']}",
                    endpoint_id=str(t["endpoint_id"]), function_id=str(t["function_id"]))

    @staticmethod
    def _spec(row: Mapping[str, Any], bodies: Mapping[str, bytes]) -> TaskSpec:
        res = row.get("resources")
        return TaskSpec(
            task_id=row["task_id"], function_id=row["function_id"],
            function=bodies.get(row["function_id"], b""), payload=bytes(row["payload"]),
            resources=ResourceSpec(**res) if res else None,
        )

    def resend(self, endpoint_id: str, held: Iterable[str]) -> list[TaskSpec]:
        """Every unfinished task of an endpoint not held by it, marked dispatched: those
        it was running when it was lost first, then those it had been sent, then its
        backlog; each part in the order submitted."""
        held_set = set(held)
        sent_before = case((tasks.c.state == lc.RUNNING, 0),
                           (tasks.c.state == lc.DISPATCHED, 1), else_=2)
        with self._begin() as conn:
            rows = [dict(r) for r in conn.execute(
                select(tasks.c.task_id, tasks.c.function_id, tasks.c.payload,
                       tasks.c.resources, tasks.c.state, tasks.c.blobs)
                .where(tasks.c.endpoint_id == endpoint_id, tasks.c.state.in_(
                    (lc.WAITING, lc.DISPATCHED, lc.RUNNING, lc.RECEIVED)))
                .order_by(sent_before, tasks.c.t_received, tasks.c.batch_pos))
                .mappings() if r["task_id"] not in held_set]
            self._load_blobs(rows, "payload")
            lost = [str(r["task_id"]) for r in rows if r["payload"] is None]
            if lost:  # its file is gone: the task cannot run, and says why
                err = ErrorInfo(code="storage_error",
                                message="the service lost the task's arguments from its disk")
                self._finish(conn, lost, lc.FAILED, {t: err for t in lost})
                rows = [r for r in rows if r["payload"] is not None]
            if rows:
                now = time.time()
                conn.execute(update(tasks).where(tasks.c.task_id == bindparam("tid"))
                             .values(state=lc.DISPATCHED, t_dispatched=now),
                             [{"tid": r["task_id"]} for r in rows])
        bodies = self.function_bodies({r["function_id"] for r in rows})
        return [self._spec(r, bodies) for r in rows]

    def claim_waiting(self, endpoint_id: str) -> list[TaskSpec]:
        """The tasks of an endpoint stored while no replica held its link
        (``waiting_for_endpoint``), marked dispatched here, in the order submitted. One
        UPDATE claims them: two replicas that both claim get disjoint sets."""
        now = time.time()
        with self._begin() as conn:
            rows = [dict(r) for r in conn.execute(
                update(tasks).where(tasks.c.endpoint_id == endpoint_id,
                                    tasks.c.state == lc.WAITING)
                .values(state=lc.DISPATCHED, t_dispatched=now)
                .returning(tasks.c.task_id, tasks.c.function_id, tasks.c.payload,
                           tasks.c.resources, tasks.c.blobs, tasks.c.t_received,
                           tasks.c.batch_pos)).mappings()]
            self._load_blobs(rows, "payload")
        rows = [r for r in rows if r["payload"] is not None]
        rows.sort(key=lambda r: (r["t_received"], r["batch_pos"]))
        bodies = self.function_bodies({r["function_id"] for r in rows})
        return [self._spec(r, bodies) for r in rows]

    def finished_since(self, after: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Every user's finished tasks with a sequence number over ``after``, in order
        (a replica's fan-out to the result streams it holds). Finishing transactions
        take their numbers on the counters row, held to their commit: what is read
        here is a gap-free prefix."""
        cols = [c for c in tasks.c if c.name not in ("payload",)]
        q = (select(*cols).where(tasks.c.seq > after, tasks.c.seq > 0)
             .order_by(tasks.c.seq).limit(limit))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        self._load_blobs(rows)
        return rows

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(counters.c.value).where(
                counters.c.name == "seq")).scalar_one())

    def mark_running(self, endpoint_id: str, states: Sequence[tuple[str, float]]) -> None:
        if not states:
            return
        with self._begin() as conn:
            conn.execute(
                update(tasks).where(tasks.c.task_id == bindparam("tid"),
                                    tasks.c.endpoint_id == endpoint_id,
                                    # no IN (...): expanding parameters cannot executemany
                                    or_(tasks.c.state == lc.WAITING,
                                        tasks.c.state == lc.DISPATCHED))
                .values(state=lc.RUNNING, t_running=bindparam("at")),
                [{"tid": tid, "at": at} for tid, at in states])

    def _next_seqs(self, conn: Any, n: int) -> int:
        """Reserve ``n`` sequence numbers; returns the first. The rows finished with
        them go to ``self._tx.rows``, published after the commit."""
        if self._tx.rows is None:
            self._seq_lock.acquire()
            self._tx.rows = []
        last = rawsql.execute(conn, self._hot.next_seqs, {"n": n})[0][0]
        return int(last) - n + 1

    def _finish(self, conn: Any, task_ids: Sequence[str], state: str,
                errors: Mapping[str, ErrorInfo],
                results: Mapping[str, TaskResult] | None = None,
                endpoint_id: str | None = None,
                written: list[str] | None = None) -> list[dict[str, Any]]:
        """Move active tasks (of ``endpoint_id`` if given) to a terminal state, within
        ``conn``'s transaction. Statements are built once: building them costs more
        than running them."""
        if not task_ids:
            return []
        if endpoint_id is None:
            found = rawsql.select_in(conn, self._hot.active_by_ids, task_ids)
        else:
            found = rawsql.select_in(conn, self._hot.active_by_ids_of_endpoint, task_ids,
                                     {"eid": endpoint_id})
        rows = [dict(zip(_FINISH_COLUMNS, r, strict=True)) for r in found]
        if not rows:
            return []
        first = self._next_seqs(conn, len(rows))
        now = time.time()
        params = []
        for i, r in enumerate(rows):
            res = results.get(r["task_id"]) if results else None
            end_state = state if res is None else (lc.SUCCESS if res.ok else lc.FAILED)
            err = errors.get(r["task_id"]) if res is None else res.error
            r.update(
                state=end_state, seq=first + i, t_completed=now,
                result=res.data if res is not None and res.ok else None,
                error=_error_fields(err),
                stdout=res.stdout if res is not None else "",
                logs=_log_fields(res),
                attempts=res.attempts if res is not None else r["attempts"],
            )
            if res is not None and res.started_at and not r.get("t_running"):
                r["t_running"] = res.started_at
            in_file = self._file_it(r["result"])
            if in_file:
                self._write_blob(_result_key(r["task_id"]), r["result"],
                                 written if written is not None else [])
            r["blobs"] = (r["blobs"] or 0) & PAYLOAD_IN_FILE | (RESULT_IN_FILE if in_file else 0)
            params.append({"tid": r["task_id"], "s": r["state"], "q": r["seq"],
                           "tc": now, "res": None if in_file else r["result"],
                           "err": None if r["error"] is None else json.dumps(r["error"]),
                           "out": r["stdout"], "att": r["attempts"], "tr": r.get("t_running"),
                           "lg": None if r["logs"] is None else json.dumps(r["logs"]),
                           "bl": RESULT_IN_FILE if in_file else 0})
        rawsql.execute_many(conn, self._hot.finish, params)
        self._finished(rows)
        return rows

    def _finished(self, rows: list[dict[str, Any]]) -> None:
        assert self._tx.rows is not None, "finished without sequence numbers"
        self._tx.rows.extend(rows)

    def complete(self, endpoint_id: str,
                 results: Sequence[TaskResult]) -> list[dict[str, Any]]:
        """Make a batch of results durable in one transaction; returns the rows that
        changed (owner_id included), ready to publish. Duplicates are ignored."""
        by_id = {r.task_id: r for r in results}
        with self._new_files() as written, self._begin() as conn:
            if len(by_id) <= INSERT_FIRST_MAX:
                rows = self._complete_small(conn, endpoint_id, list(by_id.values()), written)
            else:
                rows = self._finish(conn, list(by_id), lc.FAILED, {}, by_id, endpoint_id,
                                    written)
        self._drop_payload_files(rows)
        return rows

    def _complete_small(self, conn: Any, endpoint_id: str, results: Sequence[TaskResult],
                        written: list[str]) -> list[dict[str, Any]]:
        """A few results: each task updated if still active, its row read back by the
        same statement (where reading first took one more). A duplicate leaves its
        sequence number unused: they order, they need not be dense."""
        first = self._next_seqs(conn, len(results))
        now = time.time()
        rows = []
        for i, res in enumerate(results):
            err = _error_fields(res.error)
            logs = _log_fields(res)
            data = res.data if res.ok else None
            in_file = self._file_it(data)
            found = rawsql.execute(conn, self._hot.finish_active_returning, {
                "tid": res.task_id, "eid": endpoint_id,
                "s": lc.SUCCESS if res.ok else lc.FAILED, "q": first + i, "tc": now,
                "res": None if in_file else data, "err": None if err is None else json.dumps(err),
                "out": res.stdout, "att": res.attempts, "tr": res.started_at or None,
                "lg": None if logs is None else json.dumps(logs),
                "bl": RESULT_IN_FILE if in_file else 0})
            if found and in_file:
                assert data is not None
                self._write_blob(_result_key(res.task_id), data, written)
            if found:
                row = dict(zip(_FINISH_COLUMNS, found[0], strict=True))
                row.update(seq=first + i, t_completed=now, result=data, error=err,
                           stdout=res.stdout, logs=logs)
                rows.append(row)
        self._finished(rows)
        return rows

    def cancel(self, user: User, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        ids = [t for t in task_ids if _valid_uuid(t)]
        return self._cancel(tasks.c.task_id.in_(ids), tasks.c.owner_id == user.user_id,
                            why="cancelled by the user")

    def cancel_group(self, user: User, group_id: str, why: str) -> list[dict[str, Any]]:
        """Cancel the user's unfinished tasks of a group (an Executor's)."""
        return self._cancel(tasks.c.owner_id == user.user_id, tasks.c.group_id == group_id,
                            tasks.c.state.in_(sorted(lc.ACTIVE)), why=why)

    def _cancel(self, *where: Any, why: str) -> list[dict[str, Any]]:
        err = ErrorInfo(code="cancelled", message=why)
        with self._begin() as conn:
            found = [str(r[0]) for r in conn.execute(select(tasks.c.task_id).where(*where))]
            rows = self._finish(conn, found, lc.CANCELLED, {t: err for t in found})
        self._drop_payload_files(rows)
        return rows

    def get_task(self, user: User, task_id: str) -> dict[str, Any]:
        rows = self.fetch(user, [task_id])
        if not rows:
            raise NotFound(f"no task {task_id!r} is visible to you")
        return rows[0]

    def fetch(self, user: User, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        ids = [t for t in task_ids if _valid_uuid(t)]
        cols = [c for c in tasks.c if c.name not in ("payload",)]
        with self.engine.connect() as conn:
            rows = {r["task_id"]: dict(r) for r in conn.execute(select(*cols).where(
                tasks.c.task_id.in_(ids), tasks.c.owner_id == user.user_id)).mappings()}
        found = [rows[t] for t in ids if t in rows]
        self._load_blobs(found)
        return found

    def completed_after(self, user_id: str, after: int, group_id: str | None,
                        limit: int = 1000) -> list[dict[str, Any]]:
        cols = [c for c in tasks.c if c.name not in ("payload",)]
        # ``seq > 0`` names the partial index's condition: the planners need it said
        q = select(*cols).where(tasks.c.owner_id == user_id, tasks.c.seq > after,
                                tasks.c.seq > 0)
        if group_id is not None:
            q = q.where(tasks.c.group_id == group_id)
        q = q.order_by(tasks.c.seq).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        self._load_blobs(rows)
        return rows

    def checkpoint(self) -> None:
        """Copy the SQLite WAL into the database without waiting for anyone (PASSIVE:
        writers go on meanwhile). Off the request path; see db.WAL_BACKSTOP_PAGES."""
        if self.engine.url.get_backend_name() != "sqlite":
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def purge(self, older_than: float) -> int:
        expired = (tasks.c.state.in_(lc.TERMINAL), tasks.c.t_completed < older_than)
        with self._begin() as conn:
            filed = [(str(t), f) for t, f in conn.execute(
                select(tasks.c.task_id, tasks.c.blobs).where(*expired, tasks.c.blobs != 0))]
            n = int(conn.execute(delete(tasks).where(*expired)).rowcount)
        if self._blobs is not None:
            self._blobs.remove(key for tid, flags in filed for key in _blob_keys(tid, flags))
        return n
