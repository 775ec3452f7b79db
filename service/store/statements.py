"""Prepared statements: those on every task's path, run straight on the DBAPI cursor.

SQLAlchemy Core costs ~40 us of Python per statement on top of SQLite's own ~10 us
(compiled-cache lookup, parameter processing, result set-up), and a task is stored
with three statements and finished with three more. These few are written once in
portable SQL with ``:name`` parameters; SQLAlchemy compiles each for the engine's
dialect (``?`` for SQLite, ``%(name)s`` for psycopg) at start-up, and they run
inside the same transaction as the rest of the store's work. A driver error comes
out as SQLAlchemy's ``DBAPIError``, like any other statement's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from .. import lifecycle as lc

# IN (...) lists are compiled for these sizes; a list is padded to the next one
# (repeating its last id), and longer lists are run in slices of the largest.
IN_SIZES = (1, 8, 64, 512)


class Statement:
    """One SQL text compiled for one dialect."""

    def __init__(self, sql: str, dialect: Dialect) -> None:
        compiled = text(sql).compile(dialect=dialect)
        self.sql = compiled.string
        self.order: Sequence[str] | None = (
            list(compiled.positiontup or ()) if compiled.positional else None)

    def args(self, params: Mapping[str, Any]) -> Any:
        return params if self.order is None else tuple(params[k] for k in self.order)


class InStatement:
    """A statement with ``{ids}`` where a list of ``:id0, :id1...`` goes."""

    def __init__(self, sql: str, dialect: Dialect) -> None:
        self.by_size = {n: Statement(sql.format(ids=", ".join(f":id{i}" for i in range(n))),
                                     dialect) for n in IN_SIZES}


@contextlib.contextmanager
def _cursor(conn: Connection, stmt: Statement) -> Iterator[Any]:
    """A DB-API cursor of ``conn``'s connection; a driver error comes out as
    SQLAlchemy would have raised it (OperationalError, IntegrityError...)."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cur
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(stmt.sql, None, exc, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from exc
    finally:
        cur.close()


def execute(conn: Connection, stmt: Statement, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run ``stmt`` once; the rows it returns (if any)."""
    with _cursor(conn, stmt) as cur:
        cur.execute(stmt.sql, stmt.args(params))
        return list(cur.fetchall()) if cur.description is not None else []


def execute_many(conn: Connection, stmt: Statement,
                 params: Iterable[Mapping[str, Any]]) -> None:
    with _cursor(conn, stmt) as cur:
        cur.executemany(stmt.sql, [stmt.args(p) for p in params])


def select_in(conn: Connection, stmt: InStatement, ids: Sequence[str],
              params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of ``stmt`` for ``ids``, each once however the ids were padded (a row's
    first column must be the id)."""
    largest = IN_SIZES[-1]
    rows: dict[Any, tuple[Any, ...]] = {}
    for start in range(0, len(ids), largest):
        part = list(ids[start:start + largest])
        if not part:
            break
        size = next(n for n in IN_SIZES if n >= len(part))
        part += [part[-1]] * (size - len(part))
        args = {f"id{i}": v for i, v in enumerate(part)}
        if params:
            args.update(params)
        for row in execute(conn, stmt.by_size[size], args):
            rows[row[0]] = row
    return list(rows.values())


def state_in(states: Iterable[str]) -> str:
    """``state IN (...)``: a lifecycle guard (``lc.sources``) as SQL."""
    return "state IN ({})".format(", ".join(f"'{s}'" for s in sorted(states)))


# the columns of a task that finishing reads, publishes and returns
FINISH_COLUMNS = ("task_id", "function_id", "endpoint_id", "group_id", "owner_id", "state",
                  "attempts", "t_received", "t_waiting", "t_dispatched", "t_running", "blobs")
TASK_COLUMNS = ("task_id", "owner_id", "function_id", "endpoint_id", "group_id", "state", "seq",
                "payload", "resources", "attempts", "t_received", "t_waiting", "t_dispatched",
                "memo_key", "blobs", "batch_pos")


class Statements:
    """The statements of every submission, result and request, compiled once for the
    engine's dialect (building one costs more than running it)."""

    def __init__(self, dialect: Dialect) -> None:
        endable = state_in(lc.sources(lc.SUCCEED, lc.FAIL, lc.CANCEL))
        finishable = f"SELECT {', '.join(FINISH_COLUMNS)} FROM tasks WHERE task_id IN ({{ids}}) "
        self.endable_by_ids = InStatement(finishable + f"AND {endable}", dialect)
        self.endable_by_ids_of_endpoint = InStatement(
            finishable + f"AND {endable} AND endpoint_id = :eid", dialect)
        self.owners_of_tasks = InStatement(
            "SELECT task_id, owner_id FROM tasks WHERE task_id IN ({ids})", dialect)
        self.active_of_owner = Statement(
            f"SELECT count(*) FROM tasks WHERE owner_id = :uid AND {state_in(lc.ACTIVE)}",
            dialect)
        insert_task = (f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) "
                       f"VALUES ({', '.join(':' + c for c in TASK_COLUMNS)})")
        self.insert_task = Statement(insert_task, dialect)
        self.insert_task_unless_taken = Statement(
            insert_task + " ON CONFLICT (task_id) DO NOTHING RETURNING task_id", dialect)
        self.next_seqs = Statement(
            "UPDATE counters SET value = value + :n WHERE name = 'seq' RETURNING value", dialect)
        self.finish = Statement(
            "UPDATE tasks SET state = :s, seq = :q, t_completed = :tc, result = :res, "
            "error = :err, stdout = :out, logs = :lg, attempts = :att, t_running = :tr, "
            "payload = NULL, "
            "blobs = (blobs & 1) | :bl WHERE task_id = :tid", dialect)
        # a result's update, guarded and read back in one statement (SUCCEED or FAIL)
        self.finish_with_result = Statement(
            "UPDATE tasks SET state = :s, seq = :q, t_completed = :tc, result = :res, "
            "error = :err, stdout = :out, logs = :lg, attempts = :att, "
            "t_running = COALESCE(t_running, :tr), payload = NULL, blobs = (blobs & 1) | :bl "
            f"WHERE task_id = :tid AND endpoint_id = :eid "
            f"AND {state_in(lc.sources(lc.SUCCEED, lc.FAIL))} "
            f"RETURNING {', '.join(FINISH_COLUMNS)}", dialect)
        self.user_of_token = Statement(
            "SELECT u.user_id, u.name FROM tokens t JOIN users u ON u.user_id = t.user_id "
            "WHERE t.token_hash = :h AND t.revoked_at IS NULL", dialect)
        self.endpoint_of_link_token = Statement(
            "SELECT endpoint_id FROM endpoints WHERE endpoint_id = :e "
            "AND link_token_hash = :h", dialect)
        self.revoked_since = Statement(
            "SELECT token_hash FROM tokens WHERE revoked_at >= :since", dialect)
