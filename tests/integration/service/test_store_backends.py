"""The store on both databases the service supports: SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid

import pytest

from funcx_flows import messages as m
from funcx_flows.errors import Conflict, NotFound, PermissionDenied, RateLimited
from funcx_flows.service.db import make_engine
from funcx_flows.service.dispatcher import publishable
from funcx_flows.service.hub import Hub, Outbox
from funcx_flows.service.store import Store, User


def test_every_state_change_the_store_makes_is_one_the_lifecycle_allows(store: Store):
    """Each operation of the store, on tasks in every state: a task's state either
    stays or moves as some lifecycle event moves it (a late "running" report, a
    duplicate result, a cancel of an ended task change nothing)."""
    from funcx_flows.service import lifecycle as lc

    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    item = {"function_id": fid, "endpoint_id": eid, "payload": b"p", "group_id": "g"}
    queued, _, _ = store.submit(alice, [item] * 6, online=set())
    sent, _, _ = store.submit(alice, [item] * 6, online={eid})
    ids = queued + sent
    states = {r["task_id"]: r["state"] for r in store.fetch(alice, ids)}
    assert set(states.values()) == {lc.WAITING, lc.DISPATCHED}

    def result(tid: str, ok: bool = True) -> m.TaskResult:
        return m.TaskResult(task_id=tid, ok=ok, data=b"r" if ok else None)

    steps = [
        lambda: store.mark_running(eid, [(t, 1.0) for t in (queued[0], sent[0], sent[1])]),
        lambda: store.complete(eid, [result(sent[0]), result(queued[1], ok=False)]),
        lambda: store.mark_running(eid, [(t, 2.0) for t in (sent[0], queued[1])]),  # ended
        lambda: store.cancel(alice, [sent[0], sent[2], queued[2]]),
        lambda: store.complete(eid, [result(t) for t in (sent[0], sent[2], sent[3])]),
        lambda: store.resend(eid, held=[sent[4]]),
        lambda: store.complete(eid, [result(t) for t in ids]),  # the large-batch path
        lambda: store.cancel_group(alice, "g", "gone"),
    ]
    seen = set()
    for i, do in enumerate(steps):
        do()
        now = {r["task_id"]: r["state"] for r in store.fetch(alice, ids)}
        for tid in ids:
            before, after = states[tid], now[tid]
            assert before == after or lc.can_transition(before, after), (i, before, after)
            if before in lc.TERMINAL:
                assert after == before, (i, tid)
            seen.add((before, after))
        states = now
    assert {(lc.WAITING, lc.RUNNING), (lc.RUNNING, lc.SUCCESS), (lc.DISPATCHED, lc.CANCELLED),
            (lc.RUNNING, lc.DISPATCHED)} <= seen
    assert set(states.values()) <= lc.TERMINAL


def test_a_batch_of_tasks_round_trips(store: Store):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    fid, created = store.register_function(alice, "f", "", b"FXF-body")
    assert created and store.register_function(alice, "g", "", b"FXF-body") == (fid, False)
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {"host": "x"})
    items = [{"function_id": fid, "endpoint_id": eid, "payload": bytes([i]), "group_id": "g1"}
             for i in range(50)]
    ids, to_send, memo = store.submit(alice, items, online={eid})
    assert memo == []
    assert len(to_send[eid]) == 50 and to_send[eid][7].payload == bytes([7])
    # idempotent resubmission; a foreign user reusing an id is refused
    again, resend, _ = store.submit(alice, [{**items[0], "task_id": ids[0]}], online={eid})
    assert again == [ids[0]] and resend == {}
    with pytest.raises(Conflict):
        bob_fid, _ = store.register_function(bob, "f", "", b"FXF-b")
        bob_eid, _ = store.register_endpoint(bob, "ep", "b" * 40, {})
        store.submit(bob, [{"task_id": ids[0], "function_id": bob_fid, "endpoint_id": bob_eid,
                            "payload": b""}], online=set())
    store.mark_running(eid, [(ids[0], 1.0)])
    results = [m.TaskResult(task_id=t, ok=True, data=b"r" + t.encode()) for t in ids[:30]]
    rows = store.complete(eid, results)
    assert len(rows) == 30 and {r["state"] for r in rows} == {"success"}
    assert store.complete(eid, results) == []  # duplicates change nothing
    assert store.complete(str(uuid.uuid4()), results[:1]) == []  # another endpoint's claim
    cancelled = store.cancel(alice, ids[25:40])
    assert {r["task_id"] for r in cancelled} == set(ids[30:40])
    assert store.cancel(bob, ids[40:]) == []
    seqs = [r["seq"] for r in store.completed_after(alice.user_id, 0, "g1")]
    assert len(seqs) == 40 and seqs == sorted(seqs) and len(set(seqs)) == 40
    assert len(store.completed_after(alice.user_id, seqs[9], "g1")) == 30
    assert store.completed_after(bob.user_id, 0, None) == []
    resent = store.resend(eid, held=ids[40:45])
    assert {s.task_id for s in resent} == set(ids[45:])
    assert store.get_task(alice, ids[0])["result"] == b"r" + ids[0].encode()
    with pytest.raises(NotFound):
        store.get_task(bob, ids[0])
    failed = store.delete_endpoint(alice, eid)
    assert {r["task_id"] for r in failed} == set(ids[40:])
    # a task failure, not a refusal of a request: the client raises a TaskError
    assert {r["error"]["code"] for r in failed} == {"endpoint_deleted"}
    # memoization: a second identical call of a memoized function is answered at once
    mfid, _ = store.register_function(alice, "m", "", b"FXF-body", memoize=True)
    assert mfid != fid  # another function than the plain registration of the same body
    eid2, _ = store.register_endpoint(alice, "ep2", "m" * 40, {})
    call = {"function_id": mfid, "endpoint_id": eid2, "payload": b"args"}
    (first,), _, memo = store.submit(alice, [call], online={eid2})
    assert memo == []
    store.complete(eid2, [m.TaskResult(task_id=first, ok=True, data=b"42", stdout="hi")])
    (second,), to_send, memo = store.submit(alice, [call], online={eid2})
    assert to_send == {} and [r["task_id"] for r in memo] == [second]
    assert store.get_task(alice, second)["result"] == b"42"
    (third,), to_send, memo = store.submit(alice, [{**call, "payload": b"other"}],
                                           online={eid2})
    assert memo == [] and [s.task_id for s in to_send[eid2]] == [third]
    assert store.purge(older_than=1e12) == 52


def test_finished_records_are_published_in_sequence_order(store: Store):
    """A record committed in a worker thread is published when the loop gets to
    it; one that the loop commits meanwhile must not overtake it (a client that saw
    the later one and then lost its stream would resume after it and miss the
    earlier one). Threads cancel while the loop stores results, as the service's
    routes and dispatcher do."""
    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    ids, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid, "payload": b"x"}
                                     for _ in range(60)], online={eid})

    def done(i: int) -> None:
        store.complete(eid, [m.TaskResult(task_id=ids[i], ok=True, data=b"r")])

    def cancel(i: int) -> threading.Thread:
        thread = threading.Thread(target=store.cancel, args=(alice, [ids[i]]))
        thread.start()
        return thread

    async def scenario() -> list[int]:
        hub = Hub()
        outbox = Outbox(hub, publishable)
        outbox.bind(asyncio.get_running_loop())
        loop_thread = threading.get_ident()

        def slow_hand_over(rows: list[dict]) -> None:
            # a thread's hand-over after its commit takes a while: the loop's next
            # commit must wait for it (with PostgreSQL, only the store's sequence
            # lock makes it; SQLite's one writer does too)
            if threading.get_ident() != loop_thread:
                time.sleep(0.005)
            outbox.put(rows)

        store.publish_with(slow_hand_over)
        sub = hub.subscribe(alice.user_id, None)
        cancel(0).join()  # committed; its records wait for the loop's next turn
        done(1)  # committed on the loop, after it
        threads = [cancel(i) for i in range(2, 30)]
        for i in range(30, 60):
            done(i)
            await asyncio.sleep(0)
        for thread in threads:
            thread.join()
        seen: list[dict] = []
        while len(seen) < 60:
            batch = await asyncio.wait_for(sub.take(), 10)
            assert batch is not None
            seen += batch
        return [r["seq"] for r in seen]

    try:
        seqs = asyncio.run(scenario())
    finally:
        store.publish_with(None)
    assert len(seqs) == 60 and seqs == sorted(seqs)


def test_a_refused_batch_stores_none_of_its_tasks(store: Store):
    """Small batches insert first and check afterwards (Tasks._insert_first), large
    ones check first: either way a refusal rolls the whole batch back."""
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    bfid, _ = store.register_function(bob, "f", "", b"FXF-b")
    beid, _ = store.register_endpoint(bob, "ep", "b" * 40, {})
    taken, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                        "payload": b""}], online={eid})
    for size in (3, 20):  # below and above INSERT_FIRST_MAX
        fresh = [str(uuid.uuid4()) for _ in range(size - 1)]
        batch = [{"task_id": t, "function_id": bfid, "endpoint_id": beid, "payload": b""}
                 for t in [*fresh, taken[0]]]
        with pytest.raises(Conflict):
            store.submit(bob, batch, online={beid})
        assert store.fetch(bob, fresh) == []
        with pytest.raises(RateLimited) as info:
            store.submit(bob, batch[:-1], online={beid},
                         max_in_flight=size - 2)
        assert info.value.details["limit"] == "max_tasks_in_flight"
        assert f"0 unfinished, {size - 1} more submitted" in info.value.message
        assert store.fetch(bob, fresh) == []
    # within the limit it is taken; one more is refused and the rest kept
    kept, _, _ = store.submit(bob, [{"function_id": bfid, "endpoint_id": beid,
                                     "payload": b""}] * 1, online={beid}, max_in_flight=1)
    with pytest.raises(RateLimited):
        store.submit(bob, [{"function_id": bfid, "endpoint_id": beid, "payload": b""}],
                     online={beid}, max_in_flight=1)
    assert [r["task_id"] for r in store.fetch(bob, kept)] == kept


def test_sharing_on_both_databases(store: Store):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    group = str(uuid.uuid4())
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "s" * 40, {})
    member = User(bob.user_id, bob.name, frozenset({group}))
    store.set_sharing(alice, "function", fid, public=False, user_names=["bob"], groups=[])
    store.set_sharing(alice, "endpoint", eid, public=False, user_names=[], groups=[group])
    assert store.get_sharing(alice, "endpoint", eid) == {
        "public": False, "users": [], "groups": [group]}
    with pytest.raises(NotFound):
        store.get_endpoint(bob, eid)  # bob, but not as a member of the group
    assert store.get_endpoint(member, eid)["owned"] is False
    ids, to_send, _ = store.submit(member, [{"function_id": fid, "endpoint_id": eid,
                                             "payload": b"x"}], online={eid})
    assert [s.task_id for s in to_send[eid]] == ids
    assert [f["function_id"] for f in store.list_functions(bob, shared=True)] == [fid]
    assert store.list_functions(bob) == []
    store.delete_endpoint(alice, eid)
    with pytest.raises(NotFound):
        store.get_endpoint(member, eid)


def test_an_allow_list_takes_effect_when_the_endpoint_reregisters(store: Store):
    """The service keeps allow-lists in memory; a re-registration replaces them."""
    alice = store.ensure_user("alice")
    f, _ = store.register_function(alice, "f", "", b"FXF-f")
    g, _ = store.register_function(alice, "g", "", b"FXF-g")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})

    def submit(fid: str) -> None:
        store.submit(alice, [{"function_id": fid, "endpoint_id": eid, "payload": b""}],
                     online=set())

    submit(g)  # no list: anything goes (and the empty list is now remembered)
    store.register_endpoint(alice, "ep", "k" * 40, {"allowed_functions": [f]})
    submit(f)
    with pytest.raises(PermissionDenied, match="does not allow function"):
        submit(g)
    store.register_endpoint(alice, "ep", "k" * 40, {})
    submit(g)


def test_an_allow_list_set_through_another_replica_holds_after_the_cache_period(
        store: Store, monkeypatch):
    """Service replicas on one database: each re-reads allow-lists after ALLOW_LIST_CACHE_S."""
    import funcx_flows.service.store.registry as store_module

    replica = Store(store.engine)
    alice = store.ensure_user("alice")
    f, _ = store.register_function(alice, "f", "", b"FXF-f")
    g, _ = store.register_function(alice, "g", "", b"FXF-g")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    call = {"function_id": g, "endpoint_id": eid, "payload": b""}
    replica.submit(alice, [call], online=set())  # the replica now holds "no list"
    store.register_endpoint(alice, "ep", "k" * 40, {"allowed_functions": [f]})
    monkeypatch.setattr(store_module, "ALLOW_LIST_CACHE_S", 0.0)  # the period has passed
    with pytest.raises(PermissionDenied):
        replica.submit(alice, [call], online=set())


def test_large_batches_resources_and_errors_round_trip(store: Store):
    """Batches beyond one IN (...) slice (512 ids), JSON columns written by the
    store's raw statements and read back through SQLAlchemy."""
    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    res = {"cores": 2, "gpus": 0, "walltime_s": 60.0}
    items = [{"function_id": fid, "endpoint_id": eid, "payload": b"p%d" % i,
              "resources": res if i % 2 else None} for i in range(1100)]
    ids, to_send, _ = store.submit(alice, items, online={eid})
    assert len(set(ids)) == 1100 and [s.task_id for s in to_send[eid]] == ids
    assert to_send[eid][1].resources is not None
    assert to_send[eid][1].resources.cores == 2 and to_send[eid][0].resources is None
    resent = {s.task_id: s for s in store.resend(eid, held=())}
    assert resent[ids[3]].resources == to_send[eid][3].resources
    err = m.ErrorInfo(code="task_failed", message="boom", remote_type="ValueError",
                      remote_traceback="Traceback ...")
    results = [m.TaskResult(task_id=t, ok=i % 3 != 0, data=b"r", error=None if i % 3 else err)
               for i, t in enumerate(ids)]
    rows = store.complete(eid, results)
    assert len(rows) == 1100
    assert sorted(r["seq"] for r in rows) == list(range(rows[0]["seq"], rows[0]["seq"] + 1100))
    failed = store.get_task(alice, ids[0])
    assert failed["state"] == "failed" and failed["error"]["remote_type"] == "ValueError"
    assert store.get_task(alice, ids[1])["result"] == b"r"
    assert store.complete(eid, results) == []


def test_small_and_large_result_batches_store_the_same_records(store: Store):
    """A few results take the one-statement path (update ... returning), many the
    read-then-update one: the same fields come out of both, stored and returned."""
    from funcx_flows.service.api.records import task_record
    from funcx_flows.service.store.finishing import COMPLETE_ONE_BY_ONE_MAX

    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    err = m.ErrorInfo(code="task_failed", message="boom", remote_type="ValueError",
                      remote_traceback="Traceback ...")
    got = {}
    for n in (2, COMPLETE_ONE_BY_ONE_MAX + 2):
        ids, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                          "payload": b"p", "group_id": "g"}] * n,
                                 online={eid})
        store.mark_running(eid, [(ids[0], 5.0)])  # kept over the result's start time
        results = [m.TaskResult(task_id=t, ok=i % 2 == 0, data=b"r%d" % i,
                                error=None if i % 2 == 0 else err, stdout=f"out{i}",
                                attempts=1, started_at=7.0, finished_at=8.0)
                   for i, t in enumerate(ids)]
        returned = store.complete(eid, results)
        stored = {r["task_id"]: r for r in store.fetch(alice, ids)}
        assert len(returned) == n
        assert store.complete(eid, results[:1]) == []  # a duplicate changes nothing
        for r in returned:
            record, again = task_record(r), task_record(stored[r["task_id"]])
            assert record == again, (n, record, again)
        got[n] = [task_record(stored[t]) for t in ids[:2]]
    for a, b in zip(got[2], got[COMPLETE_ONE_BY_ONE_MAX + 2], strict=True):
        same = {k for k in a if k not in ("task_id", "seq", "timestamps")}
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
        assert a["timestamps"].keys() == b["timestamps"].keys()
    assert got[2][0]["timestamps"]["running"] == 5.0 and got[2][1]["timestamps"]["running"] == 7.0
    assert got[2][1]["error"]["remote_type"] == "ValueError" and got[2][0]["state"] == "success"


def test_an_older_database_gains_new_columns_and_indexes(tmp_path):
    """A database made before memoization and the owner/state index is brought up to
    date when the service starts on it; its tasks stay."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE functions (function_id VARCHAR(36) PRIMARY KEY, owner_id VARCHAR(36),
                name VARCHAR(500), description TEXT, body_hash VARCHAR(64), body BLOB,
                created_at FLOAT);
            CREATE TABLE tasks (task_id VARCHAR(36) PRIMARY KEY, owner_id VARCHAR(36) NOT NULL,
                function_id VARCHAR(36) NOT NULL, endpoint_id VARCHAR(36) NOT NULL,
                group_id VARCHAR(64), state VARCHAR(24) NOT NULL, seq BIGINT NOT NULL,
                payload BLOB, resources JSON, result BLOB, error JSON, stdout TEXT,
                attempts INTEGER NOT NULL, t_received FLOAT, t_waiting FLOAT,
                t_dispatched FLOAT, t_running FLOAT, t_completed FLOAT);
            CREATE INDEX ix_tasks_owner_seq ON tasks (owner_id, seq);
            CREATE INDEX ix_tasks_completed ON tasks (t_completed);
            INSERT INTO tasks (task_id, owner_id, function_id, endpoint_id, state, seq, attempts)
                VALUES ('t1', 'u1', 'f1', 'e1', 'success', 1, 0);
        """)
    engine = make_engine(f"sqlite:///{path}")
    Store(engine).create_schema()
    with sqlite3.connect(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(tasks)")}
        indexes = {r[1] for r in db.execute("PRAGMA index_list(tasks)")}
        kept = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert "memo_key" in columns and kept == 1
    assert {"ix_tasks_owner_state", "ix_tasks_endpoint_state", "ix_tasks_memo_key",
            "ix_tasks_owner_done_seq", "ix_tasks_done_at"} <= indexes
    assert not {"ix_tasks_owner_seq", "ix_tasks_completed"} & indexes  # replaced
    engine.dispose()


def test_lookups_use_their_partial_indexes(tmp_path):
    """The statements the store runs for a memo lookup, a stream's replay and a purge,
    captured as run, are planned by SQLite on the partial index made for each (a
    memo lookup once took the (owner, state) index and read every success kept)."""
    from sqlalchemy import event

    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    store = Store(engine)
    store.create_schema()
    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body", memoize=True)
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    ids, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                      "payload": b"x"}], online={eid})
    store.complete(eid, [m.TaskResult(task_id=ids[0], ok=True, data=b"r")])
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    _, _, finished = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                           "payload": b"x"}], online={eid})
    assert len(finished) == 1  # answered from the memo
    store.completed_after(alice.user_id, 0, None)
    store.purge(older_than=0.0)
    event.remove(engine, "before_cursor_execute", capture)

    def plan(fragment: str) -> str:
        statement, parameters = next((st, pa) for st, pa in seen if fragment in st)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return " ".join(str(r[3]) for r in rows)

    assert "ix_tasks_memo_key" in plan("tasks.memo_key IN")
    assert "ix_tasks_owner_done_seq" in plan("tasks.seq >")
    assert "ix_tasks_done_at" in plan("DELETE FROM tasks")
    engine.dispose()


def test_a_pinned_connection_serves_its_thread_and_recovers_from_an_error(tmp_path):
    """The event loop's own SQLite connection: the same one across its transactions,
    a failed transaction rolled back on it, other threads writing meanwhile."""
    import threading

    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    store = Store(engine)
    store.create_schema()
    store.pin_connection()
    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    used: list[object] = []
    event_conn = []

    from sqlalchemy import event

    def record(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        writes = statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
        if writes and threading.current_thread() is threading.main_thread():
            used.append(conn.connection.dbapi_connection)

    event.listen(engine, "before_cursor_execute", record)
    ids, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                      "payload": b"x"}], online={eid})
    bob = store.ensure_user("bob")
    bfid, _ = store.register_function(bob, "f", "", b"FXF-body")
    beid, _ = store.register_endpoint(bob, "ep", "b" * 40, {})
    with pytest.raises(Conflict):  # its id is taken by another user's task: rolled back
        store.submit(bob, [{"task_id": ids[0], "function_id": bfid, "endpoint_id": beid,
                            "payload": b"x"}], online={beid})

    def elsewhere() -> None:
        other, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                            "payload": b"y"}], online={eid})
        event_conn.append(other[0])

    t = threading.Thread(target=elsewhere)
    t.start()
    rows = store.complete(eid, [m.TaskResult(task_id=ids[0], ok=True, data=b"r")])
    t.join(10)
    event.remove(engine, "before_cursor_execute", record)
    assert [r["state"] for r in rows] == ["success"]
    assert len(event_conn) == 1
    assert len({id(c) for c in used}) == 1  # one connection for all of this thread's work
    got = {r["task_id"]: r["state"] for r in store.fetch(alice, [ids[0], event_conn[0]])}
    assert got == {ids[0]: "success", event_conn[0]: "dispatched"}
    store.unpin_connection()
    engine.dispose()


def test_sqlite_checkpoints_leave_the_wal_copied(tmp_path):
    """The service's background checkpoint (SQLite's own only as a 16,000-page
    backstop) copies committed pages of the WAL into the database file."""
    from funcx_flows.service.db import WAL_BACKSTOP_PAGES

    path = tmp_path / "service.db"
    engine = make_engine(f"sqlite:///{path}")
    store = Store(engine)
    store.create_schema()
    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == WAL_BACKSTOP_PAGES
    for _ in range(50):
        ids, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                          "payload": b"x" * 5000}], online={eid})
        store.complete(eid, [m.TaskResult(task_id=ids[0], ok=True, data=b"r" * 5000)])
    before = path.stat().st_size  # the tasks are in the WAL only, so far
    store.checkpoint()
    assert path.stat().st_size >= before + 50 * 5000
    engine.dispose()


def test_sqlite_keeps_large_payloads_and_results_in_files(tmp_path):
    """Over blobfiles.MIN_BYTES, a payload or result lives in a file beside the
    database (its column NULL): written with its row, read back by every reader,
    removed when the task no longer needs it, never left behind by a refusal."""
    import sqlite3

    from funcx_flows.blobfiles import MIN_BYTES

    path = tmp_path / "service.db"
    engine = make_engine(f"sqlite:///{path}")
    store = Store(engine)
    store.create_schema()
    folder = tmp_path / "service.db.blobs"
    files = lambda: len(list(folder.iterdir()))  # noqa: E731
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    mfid, _ = store.register_function(alice, "f", "", b"FXF-body", memoize=True)
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    big, small = os.urandom(MIN_BYTES + 1), b"s" * 100

    ids, to_send, _ = store.submit(alice, [
        {"function_id": fid, "endpoint_id": eid, "payload": big},
        {"function_id": fid, "endpoint_id": eid, "payload": small},
        {"function_id": mfid, "endpoint_id": eid, "payload": big}], online={eid})
    assert [s.payload for s in to_send[eid]] == [big, small, big]
    assert files() == 2
    with sqlite3.connect(path) as db:
        kept = dict(db.execute("SELECT task_id, length(payload) FROM tasks").fetchall())
    assert kept[ids[0]] is None and kept[ids[1]] == 100
    assert [s.payload for s in store.resend(eid, held=())] == [big, small, big]

    result = os.urandom(MIN_BYTES + 7)
    rows = store.complete(eid, [m.TaskResult(task_id=ids[0], ok=True, data=result),
                                m.TaskResult(task_id=ids[2], ok=True, data=result)])
    assert [r["result"] for r in rows] == [result, result]
    assert files() == 2  # both payload files gone, two result files
    assert store.get_task(alice, ids[0])["result"] == result
    assert [r["result"] for r in store.completed_after(alice.user_id, 0, None)] == [result] * 2

    # a memo hit reads the stored result's file and writes the new task's own
    again, sent, finished = store.submit(alice, [{"function_id": mfid, "endpoint_id": eid,
                                                  "payload": big}], online={eid})
    assert sent == {} and [r["result"] for r in finished] == [result]
    assert store.get_task(alice, again[0])["result"] == result and files() == 3

    # a refused batch leaves no file
    bfid, _ = store.register_function(bob, "f", "", b"FXF-b")
    beid, _ = store.register_endpoint(bob, "ep", "b" * 40, {})
    with pytest.raises(Conflict):
        store.submit(bob, [{"function_id": bfid, "endpoint_id": beid, "payload": big},
                           {"task_id": ids[0], "function_id": bfid, "endpoint_id": beid,
                            "payload": big}], online={beid})
    assert files() == 3

    # cancelling drops the payload file; a task whose file is lost fails, saying so
    doomed, _, _ = store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                         "payload": big}] * 2, online={eid})
    assert files() == 5
    store.cancel(alice, doomed[:1])
    assert files() == 4
    for f in folder.iterdir():
        if f.read_bytes() == big:
            f.unlink()
    assert store.resend(eid, held=[ids[1]]) == []
    lost = store.get_task(alice, doomed[1])
    assert lost["state"] == "failed" and lost["error"]["code"] == "arguments_lost"

    # orphans (a crash between a file and its row) go at start-up; the rest stay
    (folder / ("0" * 64)).write_bytes(b"orphan")
    Store(engine).create_schema()
    assert files() == 3
    assert store.get_task(alice, ids[2])["result"] == result
    # purged tasks take their files with them
    assert store.purge(older_than=time.time() + 1) >= 3
    assert files() == 0
    engine.dispose()


def test_tasks_a_lost_endpoint_had_are_resent_before_its_backlog(store: Store):
    """An endpoint killed with tasks running comes back to a backlog: what it had
    (running, then dispatched) goes first, each in the order submitted; the rest after."""
    alice = store.ensure_user("alice")
    fid, _ = store.register_function(alice, "f", "", b"FXF-body")
    eid, _ = store.register_endpoint(alice, "ep", "k" * 40, {})
    batches = [store.submit(alice, [{"function_id": fid, "endpoint_id": eid,
                                     "payload": bytes([b, i])} for i in range(100)],
                            online=set())[0] for b in range(6)]
    backlog = [t for ids in batches for t in ids]
    assert len(store.resend(eid, held=())) == 600  # it came online: all dispatched
    running = batches[5][:3] + batches[4][:2]  # it started these, then was killed
    store.mark_running(eid, [(t, 1.0) for t in running])
    more = store.submit(alice, [{"function_id": fid, "endpoint_id": eid, "payload": b"w"}],
                        online=set())[0]
    order = [s.task_id for s in store.resend(eid, held=())]
    by_submission = {t: i for i, t in enumerate(backlog + more)}
    assert order[:5] == sorted(running, key=by_submission.__getitem__)
    assert order[5:-1] == [t for t in backlog if t not in running]
    assert order[-1] == more[0]  # the task that waited for the endpoint comes last
