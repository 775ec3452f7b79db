"""Tasks reaching their end: results, cancels, failures the service decides, and the
sequence numbers that order them for the result streams.

Every finished task gets the next completion sequence number and goes to its
transaction's ``finished`` rows, which are published once committed (see
transactions.py for the lock that keeps them in order). Only a task that may still
end is finished (``lc.sources(...)`` in SQL), so a duplicate result, or the cancel
of a task that ended, changes nothing and publishes nothing; its number, if it
took one, stays unused: numbers order, they need not be dense.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, delete, select

from funcx_flows.errors import ArgumentsLost, EndpointDeleted, TaskCancelled
from funcx_flows.messages import ErrorInfo, TaskResult, error_info

from .. import lifecycle as lc
from ..db import counters, tasks
from .blobs import (
    PAYLOAD_IN_FILE,
    RESULT_IN_FILE,
    Blobs,
    keys_of,
    result_key,
)
from .identity import User, valid_uuid
from .statements import (
    FINISH_COLUMNS,
    Statements,
    execute,
    execute_many,
    select_in,
)
from .transactions import Transaction

# Up to this many results are each updated and read back by one statement; more
# are read first, then updated in one go.
COMPLETE_ONE_BY_ONE_MAX = 8


def error_fields(err: ErrorInfo | None) -> dict[str, Any] | None:
    """A task's error as stored (a JSON column) and published. The pickled exception
    stays opaque: base64 text, which only the client decodes and unpickles."""
    if err is None:
        return None
    fields = {"code": err.code, "message": err.message, "remote_type": err.remote_type,
              "remote_traceback": err.remote_traceback}
    if err.exception:
        fields["exception"] = base64.b64encode(err.exception).decode("ascii")
    return fields


def log_fields(res: TaskResult | None) -> list[dict[str, Any]] | None:
    """A task's log records as stored (a JSON column, NULL when none) and published."""
    if res is None or not res.logs:
        return None
    return [{"created": r.created, "level": r.level, "name": r.name, "message": r.message,
             "at": r.at} for r in res.logs]


_ENDABLE = sorted(lc.sources(lc.SUCCEED, lc.FAIL, lc.CANCEL))
_CANCELLABLE = sorted(lc.sources(lc.CANCEL))
_SUCCESS, _FAILED = lc.end_state(lc.SUCCEED), lc.end_state(lc.FAIL)


class Finishing:
    def __init__(self, sql: Statements, blobs: Blobs) -> None:
        self.sql = sql
        self.blobs = blobs

    def number(self, tx: Transaction, n: int) -> int:
        """Reserve ``n`` sequence numbers; the first. Holds the sequence lock from
        here until the transaction's rows are handed to the publisher."""
        tx.hold_sequence()
        last = execute(tx.conn, self.sql.next_seqs, {"n": n})[0][0]
        return int(last) - n + 1

    @staticmethod
    def last_seq(conn: Connection) -> int:
        """The last sequence number taken."""
        return int(conn.execute(select(counters.c.value).where(
            counters.c.name == "seq")).scalar_one())

    def finish(self, tx: Transaction, task_ids: Sequence[str], event: lc.Event,
               errors: Mapping[str, ErrorInfo],
               results: Mapping[str, TaskResult] | None = None,
               endpoint_id: str | None = None) -> list[dict[str, Any]]:
        """End the tasks (of ``endpoint_id`` if given) that may still end: by
        ``event``, or by their result's SUCCEED or FAIL. Their rows, as published."""
        if not task_ids:
            return []
        if endpoint_id is None:
            found = select_in(tx.conn, self.sql.endable_by_ids, task_ids)
        else:
            found = select_in(tx.conn, self.sql.endable_by_ids_of_endpoint, task_ids,
                              {"eid": endpoint_id})
        rows = [dict(zip(FINISH_COLUMNS, r, strict=True)) for r in found]
        if not rows:
            return []
        first = self.number(tx, len(rows))
        now = time.time()
        params = []
        for i, r in enumerate(rows):
            res = results.get(r["task_id"]) if results else None
            why = event if res is None else (lc.SUCCEED if res.ok else lc.FAIL)
            err = errors.get(r["task_id"]) if res is None else res.error
            r.update(
                state=lc.expect(r["state"], why).end, seq=first + i, t_completed=now,
                result=res.data if res is not None and res.ok else None,
                error=error_fields(err),
                stdout=res.stdout if res is not None else "",
                logs=log_fields(res),
                attempts=res.attempts if res is not None else r["attempts"],
            )
            if res is not None and res.started_at and not r.get("t_running"):
                r["t_running"] = res.started_at
            in_file = self.blobs.big(r["result"])
            if in_file:
                self.blobs.write(result_key(r["task_id"]), r["result"], tx.files)
            r["blobs"] = (r["blobs"] or 0) & PAYLOAD_IN_FILE | (RESULT_IN_FILE if in_file else 0)
            params.append({"tid": r["task_id"], "s": r["state"], "q": r["seq"],
                           "tc": now, "res": None if in_file else r["result"],
                           "err": None if r["error"] is None else json.dumps(r["error"]),
                           "out": r["stdout"], "att": r["attempts"], "tr": r.get("t_running"),
                           "lg": None if r["logs"] is None else json.dumps(r["logs"]),
                           "bl": RESULT_IN_FILE if in_file else 0})
        execute_many(tx.conn, self.sql.finish, params)
        self._finished(tx, rows)
        return rows

    def _finished(self, tx: Transaction, rows: list[dict[str, Any]]) -> None:
        tx.finished.extend(rows)
        tx.useless.extend(self.blobs.payloads(rows))

    def complete(self, tx: Transaction, endpoint_id: str,
                 results: Sequence[TaskResult]) -> list[dict[str, Any]]:
        """A batch of an endpoint's results; the rows that changed. Results of tasks
        that ended already, or are another endpoint's, are ignored."""
        by_id = {r.task_id: r for r in results}
        if len(by_id) <= COMPLETE_ONE_BY_ONE_MAX:
            return self._complete_one_by_one(tx, endpoint_id, list(by_id.values()))
        return self.finish(tx, list(by_id), lc.FAIL, {}, by_id, endpoint_id)

    def _complete_one_by_one(self, tx: Transaction, endpoint_id: str,
                             results: Sequence[TaskResult]) -> list[dict[str, Any]]:
        """A few results: each task updated if it may still end, its row read back by
        the same statement (where reading first took one more)."""
        first = self.number(tx, len(results))
        now = time.time()
        rows = []
        for i, res in enumerate(results):
            err = error_fields(res.error)
            logs = log_fields(res)
            data = res.data if res.ok else None
            in_file = self.blobs.big(data)
            found = execute(tx.conn, self.sql.finish_with_result, {
                "tid": res.task_id, "eid": endpoint_id,
                "s": _SUCCESS if res.ok else _FAILED, "q": first + i, "tc": now,
                "res": None if in_file else data, "err": None if err is None else json.dumps(err),
                "out": res.stdout, "att": res.attempts, "tr": res.started_at or None,
                "lg": None if logs is None else json.dumps(logs),
                "bl": RESULT_IN_FILE if in_file else 0})
            if not found:
                continue
            if in_file:
                assert data is not None
                self.blobs.write(result_key(res.task_id), data, tx.files)
            row = dict(zip(FINISH_COLUMNS, found[0], strict=True))
            row.update(seq=first + i, t_completed=now, result=data, error=err,
                       stdout=res.stdout, logs=logs)
            rows.append(row)
        self._finished(tx, rows)
        return rows

    def cancel(self, tx: Transaction, user: User, task_ids: Sequence[str], why: str
               ) -> list[dict[str, Any]]:
        """Cancel those of the user's tasks of these ids that may still end."""
        return self._cancel(tx, tasks.c.task_id.in_([t for t in task_ids if valid_uuid(t)]),
                            tasks.c.owner_id == user.user_id, why=why)

    def cancel_group(self, tx: Transaction, user: User, group_id: str, why: str
                     ) -> list[dict[str, Any]]:
        """Cancel the user's tasks of a group (an Executor's) that may still end."""
        return self._cancel(tx, tasks.c.owner_id == user.user_id, tasks.c.group_id == group_id,
                            tasks.c.state.in_(_CANCELLABLE), why=why)

    def _cancel(self, tx: Transaction, *where: Any, why: str) -> list[dict[str, Any]]:
        found = [str(r[0]) for r in tx.conn.execute(select(tasks.c.task_id).where(*where))]
        err = error_info(TaskCancelled(why))
        return self.finish(tx, found, lc.CANCEL, dict.fromkeys(found, err))

    def fail_tasks_of_endpoint(self, tx: Transaction, endpoint_id: str) -> list[dict[str, Any]]:
        """The endpoint is being deleted: its unfinished tasks fail, saying so."""
        ids = [str(r[0]) for r in tx.conn.execute(select(tasks.c.task_id).where(
            tasks.c.endpoint_id == endpoint_id, tasks.c.state.in_(_ENDABLE)))]
        err = error_info(EndpointDeleted(f"endpoint {endpoint_id} was deleted",
                                         endpoint_id=endpoint_id))
        return self.finish(tx, ids, lc.FAIL, dict.fromkeys(ids, err))

    def fail_lost_arguments(self, tx: Transaction, task_ids: Sequence[str]
                            ) -> list[dict[str, Any]]:
        """Their payload files are gone: they cannot run, and say why."""
        err = error_info(ArgumentsLost("the service lost the task's arguments from its disk"))
        return self.finish(tx, task_ids, lc.FAIL, dict.fromkeys(task_ids, err))

    def purge(self, tx: Transaction, older_than: float) -> int:
        """Delete the tasks that finished before ``older_than``; how many. Their files
        go once committed."""
        expired = (tasks.c.state.in_(sorted(lc.sources(lc.PURGE))),
                   tasks.c.t_completed < older_than)
        tx.useless.extend(key for tid, flags in tx.conn.execute(
            select(tasks.c.task_id, tasks.c.blobs).where(*expired, tasks.c.blobs != 0))
            for key in keys_of(str(tid), flags))
        return int(tx.conn.execute(delete(tasks).where(*expired)).rowcount)
