"""Tasks stored and sent: a submitted batch (all or nothing), memoized answers, what an
endpoint is sent again when it says Hello, running states, and the reads of tasks.

Two ways to insert a batch, by size (both all or nothing, and both idempotent by
task id: the user's own id again is skipped, another user's refused):
- up to ``INSERT_FIRST_MAX`` rows, each inserted unless its id is taken, and taken
  ids looked up afterwards: one statement a task where looking first took two;
- more, every id looked up first, then the new rows inserted in one go.

A memoized function's call whose (function, payload) already succeeded is answered
from that result in the same transaction, and never sent.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, or_, select, update

from funcx_flows.errors import Conflict, InvalidRequest, NotFound, RateLimited
from funcx_flows.messages import LogRecord, ResourceSpec, TaskResult, TaskSpec

from .. import lifecycle as lc
from ..db import tasks, users
from .blobs import PAYLOAD_IN_FILE, Blobs, payload_key
from .finishing import Finishing
from .identity import User, valid_uuid
from .registry import Registry
from .sharing import Sharing
from .statements import Statements, execute, execute_many, select_in
from .transactions import Transaction

INSERT_FIRST_MAX = 8

_SENT, _QUEUED = lc.stored_state(online=True), lc.stored_state(online=False)
_CLAIMED = lc.expect(_QUEUED, lc.DISPATCH).end
_RESENDABLE = sorted(lc.sources(lc.DISPATCH))
_STARTABLE = sorted(lc.sources(lc.START))
_READ_COLUMNS = [c for c in tasks.c if c.name != "payload"]


def check_batch(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The batch's task ids (new ones where none is given), or why it is refused."""
    for fid in {str(t["function_id"]) for t in items}:
        if not valid_uuid(fid):
            raise NotFound(f"no function {fid!r} is visible to you")
    for eid in {str(t["endpoint_id"]) for t in items}:
        if not valid_uuid(eid):
            raise NotFound(f"no endpoint {eid!r} is visible to you")
    ids = [str(t.get("task_id") or uuid.uuid4()) for t in items]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("a batch repeats a task_id")
    for tid in ids:
        if not valid_uuid(tid):
            raise InvalidRequest(f"task_id {tid!r} is not a UUID")
    return ids


class Tasks:
    def __init__(self, sql: Statements, blobs: Blobs, sharing: Sharing, registry: Registry,
                 finishing: Finishing) -> None:
        self.sql = sql
        self.blobs = blobs
        self.sharing = sharing
        self.registry = registry
        self.finishing = finishing

    # ------------------------------------------------------------- submit --

    def submit(self, tx: Transaction, user: User, ids: list[str],
               items: Sequence[Mapping[str, Any]], online: set[str], max_in_flight: int
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Store a checked batch (``check_batch``): the rows inserted, and those of
        them answered from a memoized result."""
        conn = tx.conn
        if max_in_flight and conn.dialect.name == "postgresql":
            # replicas count a user's tasks one submission at a time: two that
            # counted at once could both pass the limit (SQLite writes one at a time)
            conn.execute(select(users.c.user_id).where(
                users.c.user_id == user.user_id).with_for_update())
        self.sharing.check_usable(conn, user, "function", {str(t["function_id"]) for t in items})
        self.sharing.check_usable(conn, user, "endpoint", {str(t["endpoint_id"]) for t in items})
        self.registry.check_allowed(conn, items)
        now = time.time()
        rows = [self._task_row(user, tid, t, online, now, pos)
                for pos, (tid, t) in enumerate(zip(ids, items, strict=True))]
        for r in rows:
            if self.blobs.big(r["payload"]):
                r["blobs"] = PAYLOAD_IN_FILE
        memo = self._memo_keys(conn, rows)
        rows = (self._insert_first(conn, user, rows) if len(rows) <= INSERT_FIRST_MAX
                else self._insert_checked(conn, user, rows))
        for r in rows:
            if r["blobs"] & PAYLOAD_IN_FILE:
                self.blobs.write(payload_key(r["task_id"]), r["payload"], tx.files)
        if max_in_flight:  # counted with the new rows (a refusal rolls them back)
            active = execute(conn, self.sql.active_of_owner, {"uid": user.user_id})[0][0]
            if active > max_in_flight:
                raise RateLimited(
                    f"limit of {max_in_flight} tasks in flight per user reached "
                    f"({active - len(rows)} unfinished, {len(rows)} more submitted)",
                    limit="max_tasks_in_flight")
        inserted = {r["task_id"] for r in rows}
        memo = {t: k for t, k in memo.items() if t in inserted}
        return rows, self._answer_from_memo(tx, user, memo)

    def to_send(self, rows: Iterable[Mapping[str, Any]], answered: Iterable[Mapping[str, Any]]
                ) -> dict[str, list[TaskSpec]]:
        """Per endpoint, the specs of the stored tasks to send now."""
        done = {r["task_id"] for r in answered}
        sent = [r for r in rows if r["state"] == _SENT and r["task_id"] not in done]
        bodies = self.registry.function_bodies({r["function_id"] for r in sent})
        out: dict[str, list[TaskSpec]] = {}
        for r in sent:
            out.setdefault(r["endpoint_id"], []).append(spec(r, bodies))
        return out

    @staticmethod
    def _task_row(user: User, task_id: str, t: Mapping[str, Any], online: set[str],
                  now: float, pos: int) -> dict[str, Any]:
        eid = str(t["endpoint_id"])
        state = _SENT if eid in online else _QUEUED
        return {
            "task_id": task_id, "owner_id": user.user_id,
            "function_id": str(t["function_id"]), "endpoint_id": eid,
            "group_id": t.get("group_id"), "state": state, "seq": 0,
            "payload": t["payload"], "resources": t.get("resources"),
            "attempts": 0, "t_received": now, "t_waiting": now,
            "t_dispatched": now if state == _SENT else None, "memo_key": None,
            "blobs": 0, "batch_pos": pos,
        }

    @staticmethod
    def _insert_params(row: Mapping[str, Any]) -> dict[str, Any]:
        res = row["resources"]
        return {**row, "resources": None if res is None else json.dumps(res),
                "payload": None if row["blobs"] & PAYLOAD_IN_FILE else row["payload"]}

    def _insert_first(self, conn: Connection, user: User,
                      rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A small batch: each row inserted unless its id is taken; taken ids looked
        up afterwards (``_own_task_ids``). Returns the rows inserted."""
        fresh, taken = [], []
        for r in rows:
            if execute(conn, self.sql.insert_task_unless_taken, self._insert_params(r)):
                fresh.append(r)
            else:
                taken.append(r["task_id"])
        if taken:
            self._own_task_ids(conn, user, taken)
        return fresh

    def _insert_checked(self, conn: Connection, user: User,
                        rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A large batch: the ids looked up first, the new rows inserted in one go."""
        existing = self._own_task_ids(conn, user, [r["task_id"] for r in rows])
        fresh = [r for r in rows if r["task_id"] not in existing]
        if fresh:
            execute_many(conn, self.sql.insert_task, (self._insert_params(r) for r in fresh))
        return fresh

    def _own_task_ids(self, conn: Connection, user: User, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` exist; Conflict if any belongs to another user."""
        existing = {str(r[0]): str(r[1])
                    for r in select_in(conn, self.sql.owners_of_tasks, ids)}
        if any(owner != user.user_id for owner in existing.values()):
            raise Conflict("a task_id in this batch is already in use")
        return set(existing)

    def _memo_keys(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, str]:
        """Set ``memo_key`` on rows of memoized functions; returns task id -> key."""
        memoized = self.registry.memoized(conn, {r["function_id"] for r in rows})
        keys = {}
        for r in rows:
            if r["function_id"] in memoized:
                r["memo_key"] = hashlib.sha256(r["function_id"].encode() + b"\0"
                                               + r["payload"]).hexdigest()
                keys[r["task_id"]] = r["memo_key"]
        return keys

    def _answer_from_memo(self, tx: Transaction, user: User, memo: dict[str, str]
                          ) -> list[dict[str, Any]]:
        """Finish, with the stored result, new tasks whose call already succeeded."""
        if not memo:
            return []
        # the state is checked here, not in SQL: with it there, SQLite's planner took
        # the (owner, state) index and read every success the user had kept
        found = [dict(r) for r in tx.conn.execute(
            select(tasks.c.task_id, tasks.c.memo_key, tasks.c.result, tasks.c.stdout,
                   tasks.c.logs, tasks.c.state, tasks.c.blobs).where(
                tasks.c.owner_id == user.user_id, tasks.c.memo_key.in_(set(memo.values()))))
            .mappings() if r["state"] == lc.SUCCESS]
        self.blobs.load(found)
        hits = {str(r["memo_key"]): r for r in found if r["result"] is not None}
        answers = {tid: TaskResult(task_id=tid, ok=True, data=bytes(hits[key]["result"]),
                                   stdout=hits[key]["stdout"] or "", attempts=0,
                                   logs=[LogRecord(**x) for x in hits[key]["logs"] or ()])
                   for tid, key in memo.items() if key in hits}
        return self.finishing.finish(tx, list(answers), lc.SUCCEED, {}, answers)

    # ------------------------------------------------------ to endpoints --

    def resend(self, tx: Transaction, endpoint_id: str, held: Iterable[str]
               ) -> list[dict[str, Any]]:
        """Every unfinished task of an endpoint not held by it, dispatched again:
        those it was running when it was lost first, then those it had been sent,
        then its backlog; each part in the order submitted. Their rows."""
        held_set = set(held)
        sent_before = case((tasks.c.state == lc.RUNNING, 0),
                           (tasks.c.state == lc.DISPATCHED, 1), else_=2)
        rows = [dict(r) for r in tx.conn.execute(
            select(tasks.c.task_id, tasks.c.function_id, tasks.c.payload,
                   tasks.c.resources, tasks.c.state, tasks.c.blobs)
            .where(tasks.c.endpoint_id == endpoint_id, tasks.c.state.in_(_RESENDABLE))
            .order_by(sent_before, tasks.c.t_received, tasks.c.batch_pos))
            .mappings() if r["task_id"] not in held_set]
        self.blobs.load(rows, "payload")
        lost = [str(r["task_id"]) for r in rows if r["payload"] is None]
        if lost:  # its file is gone: the task cannot run, and says why
            self.finishing.fail_lost_arguments(tx, lost)
            rows = [r for r in rows if r["payload"] is not None]
        for r in rows:
            r["state"] = lc.expect(r["state"], lc.DISPATCH).end
        if rows:
            tx.conn.execute(update(tasks).where(tasks.c.task_id == bindparam("tid"))
                            .values(state=lc.end_state(lc.DISPATCH), t_dispatched=time.time()),
                            [{"tid": r["task_id"]} for r in rows])
        return rows

    def claim_waiting(self, tx: Transaction, endpoint_id: str) -> list[dict[str, Any]]:
        """The endpoint's queued tasks (stored while no replica held its link),
        dispatched here, in the order submitted; those whose payload file is gone
        are left out. One UPDATE claims them: two replicas get disjoint sets."""
        rows = [dict(r) for r in tx.conn.execute(
            update(tasks).where(tasks.c.endpoint_id == endpoint_id, tasks.c.state == _QUEUED)
            .values(state=_CLAIMED, t_dispatched=time.time())
            .returning(tasks.c.task_id, tasks.c.function_id, tasks.c.payload,
                       tasks.c.resources, tasks.c.blobs, tasks.c.t_received,
                       tasks.c.batch_pos)).mappings()]
        self.blobs.load(rows, "payload")
        rows = [r for r in rows if r["payload"] is not None]
        rows.sort(key=lambda r: (r["t_received"], r["batch_pos"]))
        return rows

    def specs(self, rows: Sequence[Mapping[str, Any]]) -> list[TaskSpec]:
        bodies = self.registry.function_bodies({r["function_id"] for r in rows})
        return [spec(r, bodies) for r in rows]

    @staticmethod
    def mark_running(conn: Connection, endpoint_id: str,
                     states: Sequence[tuple[str, float]]) -> None:
        """The endpoint started these (task id, when): START where it applies."""
        conn.execute(
            update(tasks).where(tasks.c.task_id == bindparam("tid"),
                                tasks.c.endpoint_id == endpoint_id,
                                # no IN (...): expanding parameters cannot executemany
                                or_(*(tasks.c.state == s for s in _STARTABLE)))
            .values(state=lc.end_state(lc.START), t_running=bindparam("at")),
            [{"tid": tid, "at": at} for tid, at in states])

    # -------------------------------------------------------------- reads --

    def fetch(self, conn: Connection, user: User, task_ids: Sequence[str]
              ) -> list[dict[str, Any]]:
        """The user's tasks of these ids, in their order (unknown ones left out)."""
        ids = [t for t in task_ids if valid_uuid(t)]
        rows = {r["task_id"]: dict(r) for r in conn.execute(select(*_READ_COLUMNS).where(
            tasks.c.task_id.in_(ids), tasks.c.owner_id == user.user_id)).mappings()}
        found = [rows[t] for t in ids if t in rows]
        self.blobs.load(found)
        return found

    def completed_after(self, conn: Connection, user_id: str, after: int,
                        group_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The user's (group's) finished tasks numbered after ``after``, in order."""
        # ``seq > 0`` names the partial index's condition: the planners need it said
        q = select(*_READ_COLUMNS).where(tasks.c.owner_id == user_id, tasks.c.seq > after,
                                         tasks.c.seq > 0)
        if group_id is not None:
            q = q.where(tasks.c.group_id == group_id)
        rows = [dict(r) for r in conn.execute(q.order_by(tasks.c.seq).limit(limit)).mappings()]
        self.blobs.load(rows)
        return rows

    def finished_since(self, conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
        """Every user's finished tasks numbered after ``after``, in order (a replica's
        fan-out to the result streams it holds). Finishing transactions hold the
        counters row from numbering to commit: what is read is a gap-free prefix."""
        q = (select(*_READ_COLUMNS).where(tasks.c.seq > after, tasks.c.seq > 0)
             .order_by(tasks.c.seq).limit(limit))
        rows = [dict(r) for r in conn.execute(q).mappings()]
        self.blobs.load(rows)
        return rows

    @staticmethod
    def queue_depths(conn: Connection, endpoint_ids: Sequence[str]
                     ) -> dict[str, dict[str, int]]:
        """Unfinished tasks per state, of each endpoint (one query for all: the
        dashboard lists many; ix_tasks_endpoint_state answers it)."""
        out: dict[str, dict[str, int]] = {eid: {} for eid in endpoint_ids}
        if not endpoint_ids:
            return out
        q = (select(tasks.c.endpoint_id, tasks.c.state, func.count()).where(
            tasks.c.endpoint_id.in_(list(endpoint_ids)), tasks.c.state.in_(lc.ACTIVE))
             .group_by(tasks.c.endpoint_id, tasks.c.state))
        for eid, state, n in conn.execute(q):
            out[str(eid)][str(state)] = int(n)
        return out


def spec(row: Mapping[str, Any], bodies: Mapping[str, bytes]) -> TaskSpec:
    res = row.get("resources")
    return TaskSpec(
        task_id=row["task_id"], function_id=row["function_id"],
        function=bodies.get(row["function_id"], b""), payload=bytes(row["payload"]),
        resources=ResourceSpec(**res) if res else None,
    )
