"""All reads and writes of the service's database, each call one transaction.

Routes and the dispatcher call ``Store``; nothing else touches SQL. Each method
says where its transaction begins and ends and hands it, as an object, to the
module of the concern that works inside it. Every query is scoped by the
caller's user id, so one user can neither see nor use another's functions,
endpoints or tasks (they answer ``NotFound``). Every change of a task's state
is one the lifecycle (``service/lifecycle.py``) allows.

A submission and a result on their way through (the modules of this package)::

    POST /v1/tasks, or a stream's submit -> Store.submit
        tasks.check_batch                    ids, malformed ones refused
        transactions.write -> Transaction    write lock (SQLite), BEGIN
          sharing.check_usable               the user's, or shared with them
          registry.check_allowed             the endpoint's allow-list
          tasks.submit                       rows stored queued or dispatched
            blobs.write                        a large payload to its file
            statements.insert_task...          one INSERT a task, or one for all
            finishing.finish                   memoized calls answered (+ numbers)
        COMMIT; memo answers handed to the publisher
        tasks.to_send -> registry.function_bodies -> TaskSpecs for the dispatcher

    Results from an endpoint -> dispatcher -> Store.complete
        transactions.write -> Transaction
          finishing.complete
            finishing.number                 the sequence lock, then numbers
            statements.finish_with_result    UPDATE ... WHERE may end ... RETURNING
            blobs.write                      a large result to its file
        COMMIT; rows handed to the publisher (hub.Outbox), sequence lock released,
        payload files removed; the dispatcher acknowledges the results

The rest: identity (users, tokens: checked uncached on every request), and the
reads of tasks (``fetch``, ``completed_after`` for a stream's replay, ``list_tasks``
for a listing with filters and paging: listing.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from funcx_flows.errors import NotFound, StorageUnavailable
from funcx_flows.messages import TaskResult, TaskSpec

from ..db import counters, create_schema, disk_problem
from . import reports
from .blobs import Blobs
from .finishing import Finishing
from .identity import Identity, User, hash_token
from .listing import TaskFilter, TaskPage, list_tasks
from .registry import ENDPOINT_LISTED, FUNCTION_LISTED, Registry
from .sharing import Sharing, check_group_ids
from .statements import Statements
from .tasks import Tasks, check_batch
from .transactions import Publish, Transactions

__all__ = ["Store", "TaskFilter", "TaskPage", "User", "hash_token"]

Row = dict[str, Any]


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.blobs = Blobs()  # a folder once create_schema found an SQLite file
        self.tx = Transactions(engine, self.blobs)
        sql = Statements(engine.dialect)
        self.identity = Identity(sql)
        self.sharing = Sharing()
        self.registry = Registry(sql, self.tx.read)
        self.finishing = Finishing(sql, self.blobs)
        self.tasks = Tasks(sql, self.blobs, self.sharing, self.registry, self.finishing)

    # ------------------------------------------------------------ storage --

    def pin_connection(self) -> None:
        self.tx.pin_connection()

    def unpin_connection(self) -> None:
        self.tx.unpin_connection()

    def publish_with(self, publish: Publish | None) -> None:
        self.tx.publish_with(publish)

    def create_schema(self) -> None:
        try:
            create_schema(self.engine)
        except DBAPIError as exc:
            url = self.engine.url.render_as_string(hide_password=True)
            why = "; ".join(x for x in (str(exc.orig).strip(), disk_problem(self.engine)) if x)
            raise StorageUnavailable(f"cannot set up the database at {url}: {why}") from exc
        database = self.engine.url.database
        if self.tx.sqlite and database and database != ":memory:":
            with self.engine.connect() as conn:
                self.blobs.open(Path(database), conn)

    def probe_write(self) -> None:
        """Raise when the database cannot be written (readiness): a write transaction
        that changes nothing (a DBAPIError when the server is away or refuses), and
        for SQLite a look at its disk (a full one may still take a no-op write)."""
        problem = disk_problem(self.engine)
        if problem:
            raise StorageUnavailable(f"the service cannot write its database: {problem}")
        with self.tx.write() as tx:
            tx.conn.execute(update(counters).where(counters.c.name == "seq")
                            .values(value=counters.c.value))

    def checkpoint(self) -> None:
        """Copy the SQLite WAL into the database without waiting for anyone (PASSIVE:
        writers go on meanwhile). Off the request path; see db.WAL_BACKSTOP_PAGES."""
        if self.tx.sqlite:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    # ----------------------------------------------------------- identity --

    def ensure_user(self, name: str) -> User:
        with self.tx.write() as tx:
            return self.identity.ensure_user(tx.conn, name)

    def user_count(self) -> int:
        with self.tx.read() as conn:
            return self.identity.user_count(conn)

    def create_token(self, user: User, name: str) -> tuple[str, str]:
        with self.tx.write() as tx:
            return self.identity.create_token(tx.conn, user, name)

    def authenticate(self, token: str) -> User | None:
        """The token's user, or None when it is unknown or revoked (never cached)."""
        return self.user_of_digest(hash_token(token))

    def user_of_digest(self, digest: str) -> User | None:
        with self.tx.read() as conn:
            return self.identity.user_of_digest(conn, digest)

    def revoked_since(self, since: float) -> list[str]:
        """Digests of the tokens revoked at or after ``since`` (by anyone: a result
        stream opened with one of them is closed)."""
        with self.tx.read() as conn:
            return self.identity.revoked_since(conn, since)

    def list_tokens(self, user: User | None) -> list[Row]:
        with self.tx.read() as conn:
            return self.identity.list_tokens(conn, user)

    def revoke_token(self, token_id: str, user: User | None) -> str:
        """Revoke a token (of ``user``, if given); its digest."""
        with self.tx.write() as tx:
            return self.identity.revoke_token(tx.conn, token_id, user)

    # ---------------------------------------------------------- functions --

    def register_function(self, user: User, name: str, description: str,
                          body: bytes, memoize: bool = False) -> tuple[str, bool]:
        try:
            with self.tx.write() as tx:
                return self.registry.register_function(tx.conn, user, name, description,
                                                       body, memoize)
        except IntegrityError:  # a concurrent registration of the same body won
            with self.tx.read() as conn:
                found = self.registry.function_of_body(conn, user, body, memoize)
            if found is None:
                raise
            return str(found), False

    def get_function(self, user: User, function_id: str) -> Row:
        """A function the user owns or that is shared with them (``owned`` says which)."""
        with self.tx.read() as conn:
            return self.sharing.visible(conn, user, "function", function_id)

    def list_functions(self, user: User, shared: bool = False) -> list[Row]:
        """The user's functions; with ``shared``, also those shared with them."""
        with self.tx.read() as conn:
            return self.sharing.listing(conn, user, "function", FUNCTION_LISTED, shared)

    def delete_function(self, user: User, function_id: str) -> None:
        with self.tx.write() as tx:
            self.sharing.owned(tx.conn, user, "function", function_id, "delete it")
            self.registry.delete_function(tx.conn, function_id)
            self.sharing.drop(tx.conn, "function", function_id)
        self.sharing.deleted("function", function_id)
        self.registry.function_deleted(function_id)

    def function_bodies(self, function_ids: Iterable[str]) -> dict[str, bytes]:
        return self.registry.function_bodies(function_ids)

    # ---------------------------------------------------------- endpoints --

    def register_endpoint(self, user: User, name: str, public_key: str,
                          meta: Mapping[str, Any]) -> tuple[str, bool]:
        with self.tx.write() as tx:
            return self.registry.register_endpoint(tx.conn, user, name, public_key, meta)

    def new_link_token(self, endpoint_id: str) -> str:
        with self.tx.write() as tx:
            return self.registry.new_link_token(tx.conn, endpoint_id)

    def link_token_valid(self, endpoint_id: str, token: str) -> bool:
        with self.tx.read() as conn:
            return self.registry.link_token_valid(conn, endpoint_id, token)

    def get_endpoint(self, user: User, endpoint_id: str) -> Row:
        """An endpoint the user owns or that is shared with them (``owned`` says which)."""
        with self.tx.read() as conn:
            return self.sharing.visible(conn, user, "endpoint", endpoint_id)

    def list_endpoints(self, user: User, shared: bool = False) -> list[Row]:
        """The user's endpoints; with ``shared``, also those shared with them."""
        with self.tx.read() as conn:
            return self.sharing.listing(conn, user, "endpoint", ENDPOINT_LISTED, shared)

    def delete_endpoint(self, user: User, endpoint_id: str) -> list[Row]:
        """Delete an endpoint; its unfinished tasks fail. Returns their records."""
        with self.tx.write() as tx:
            self.sharing.owned(tx.conn, user, "endpoint", endpoint_id, "delete it")
            rows = self.finishing.fail_tasks_of_endpoint(tx, endpoint_id)
            self.registry.delete_endpoint(tx.conn, endpoint_id)
            self.sharing.drop(tx.conn, "endpoint", endpoint_id)
        self.sharing.deleted("endpoint", endpoint_id)
        self.registry.endpoint_deleted(endpoint_id)
        return rows

    def endpoint_keys(self) -> dict[str, str]:
        with self.tx.read() as conn:
            return self.registry.endpoint_keys(conn)

    def touch_endpoint(self, endpoint_id: str) -> None:
        with self.tx.write() as tx:
            self.registry.touch_endpoint(tx.conn, endpoint_id)

    # ------------------------------------------------------------ sharing --

    def get_sharing(self, user: User, kind: str, object_id: str) -> Row:
        with self.tx.read() as conn:
            self.sharing.owned(conn, user, kind, object_id, "see whom it is shared with")
            return self.sharing.describe(conn, kind, object_id)

    def set_sharing(self, user: User, kind: str, object_id: str, *, public: bool,
                    user_names: Sequence[str], groups: Sequence[str]) -> Row:
        """Replace whom a thing of the user's is shared with. Users are named as the
        service knows them; ``globus:<username>`` names need not have signed in yet."""
        with self.tx.read() as conn:
            self.sharing.owned(conn, user, kind, object_id, "share it")
        group_ids = check_group_ids(groups)
        for name in user_names:
            if name.startswith("globus:"):
                self.ensure_user(name)
        with self.tx.write() as tx:
            out = self.sharing.replace(tx.conn, user, kind, object_id, public=public,
                                       user_names=user_names, groups=group_ids)
        self.sharing.forget()  # what was read while it changed
        return out

    # -------------------------------------------------------------- tasks --

    def submit(self, user: User, items: Sequence[Mapping[str, Any]],
               online: set[str], max_in_flight: int = 0
               ) -> tuple[list[str], dict[str, list[TaskSpec]], list[Row]]:
        """Store a batch (all or nothing). Returns the task ids in order; per endpoint,
        the specs of new tasks on online endpoints (to send now); and the rows of tasks
        answered at once from a memoized result (published by the store)."""
        ids = check_batch(items)
        for attempt in (1, 2):
            try:
                with self.tx.write() as tx:
                    rows, answered = self.tasks.submit(tx, user, ids, items, online,
                                                       max_in_flight)
                break
            except IntegrityError:
                # the same task ids stored at the same moment by another process (an
                # idempotent resubmission through two replicas): looked up again,
                # they are found and skipped
                if attempt == 2:
                    raise
        return ids, self.tasks.to_send(rows, answered), answered

    def resend(self, endpoint_id: str, held: Iterable[str]) -> list[TaskSpec]:
        """Every unfinished task of an endpoint not held by it, dispatched again (see
        ``Tasks.resend`` for the order)."""
        with self.tx.write() as tx:
            rows = self.tasks.resend(tx, endpoint_id, held)
        return self.tasks.specs(rows)

    def claim_waiting(self, endpoint_id: str) -> list[TaskSpec]:
        """The endpoint's tasks stored while no replica held its link, dispatched
        here (see ``Tasks.claim_waiting``)."""
        with self.tx.write() as tx:
            rows = self.tasks.claim_waiting(tx, endpoint_id)
        return self.tasks.specs(rows)

    def finished_since(self, after: int, limit: int = 1000) -> list[Row]:
        """Every user's finished tasks numbered after ``after``, in order."""
        with self.tx.read() as conn:
            return self.tasks.finished_since(conn, after, limit)

    def last_seq(self) -> int:
        with self.tx.read() as conn:
            return self.finishing.last_seq(conn)

    def mark_running(self, endpoint_id: str, states: Sequence[tuple[str, float]]) -> None:
        if states:
            with self.tx.write() as tx:
                self.tasks.mark_running(tx.conn, endpoint_id, states)

    def complete(self, endpoint_id: str, results: Sequence[TaskResult]) -> list[Row]:
        """Make a batch of results durable in one transaction; returns the rows that
        changed (owner_id included), published once committed. Duplicates are ignored."""
        with self.tx.write() as tx:
            return self.finishing.complete(tx, endpoint_id, results)

    def cancel(self, user: User, task_ids: Sequence[str]) -> list[Row]:
        """Cancel the user's tasks of these ids that have not ended; their rows."""
        with self.tx.write() as tx:
            return self.finishing.cancel(tx, user, task_ids, "cancelled by the user")

    def cancel_group(self, user: User, group_id: str, why: str) -> list[Row]:
        """Cancel the user's unfinished tasks of a group (an Executor's)."""
        with self.tx.write() as tx:
            return self.finishing.cancel_group(tx, user, group_id, why)

    def get_task(self, user: User, task_id: str) -> Row:
        rows = self.fetch(user, [task_id])
        if not rows:
            raise NotFound(f"no task {task_id!r} is visible to you")
        return rows[0]

    def fetch(self, user: User, task_ids: Sequence[str]) -> list[Row]:
        with self.tx.read() as conn:
            return self.tasks.fetch(conn, user, task_ids)

    def list_tasks(self, user: User, filters: TaskFilter) -> TaskPage:
        """A page of the user's own tasks, newest first (``listing.list_tasks``)."""
        with self.tx.read() as conn:
            return list_tasks(conn, user.user_id, filters)

    def completed_after(self, user_id: str, after: int, group_id: str | None,
                        limit: int = 1000) -> list[Row]:
        with self.tx.read() as conn:
            return self.tasks.completed_after(conn, user_id, after, group_id, limit)

    def queue_depths(self, endpoint_id: str) -> dict[str, int]:
        return self.queue_depths_of([endpoint_id])[endpoint_id]

    def queue_depths_of(self, endpoint_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Unfinished tasks per state of each endpoint, in one query."""
        with self.tx.read() as conn:
            return self.tasks.queue_depths(conn, endpoint_ids)

    def put_trigger_report(self, user: User, process: str, report: dict[str, Any],
                           at: float, limit: int) -> None:
        """A trigger process's newest status report (store/reports.py)."""
        with self.tx.write() as tx:
            reports.put(tx.conn, user.user_id, process, report, at, limit)

    def trigger_reports(self, user_id: str) -> list[dict[str, Any]]:
        with self.tx.read() as conn:
            return reports.of(conn, user_id)

    def purge(self, older_than: float) -> int:
        """Delete the tasks that finished before ``older_than``; how many."""
        with self.tx.write() as tx:
            return self.finishing.purge(tx, older_than)
