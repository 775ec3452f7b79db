"""Listing a user's tasks (service/store/listing.py) on SQLite and PostgreSQL: the
filters, paging that neither skips nor repeats a row, only the caller's tasks, bad
filters refused by name, and the index a listing reads."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from waiting import wait_until

from funcx_flows import messages as m
from funcx_flows.errors import InvalidRequest
from funcx_flows.service.store import Store, TaskFilter


def _listed(store: Store, user, **filters) -> list[str]:  # type: ignore[no-untyped-def]
    """Every id the filter selects, page after page (small pages on purpose)."""
    out: list[str] = []
    cursor = None
    while True:
        page = store.list_tasks(user, TaskFilter(cursor=cursor, **filters))
        out += [r["task_id"] for r in page.tasks]
        cursor = page.next_cursor
        if cursor is None:
            return out


def test_filters_and_paging(store: Store):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    f1, _ = store.register_function(alice, "f1", "", b"FXF-1")
    f2, _ = store.register_function(alice, "f2", "", b"FXF-2")
    e1, _ = store.register_endpoint(alice, "e1", "a" * 40, {})
    e2, _ = store.register_endpoint(alice, "e2", "b" * 40, {})
    # one batch: 25 tasks received at the same instant (ties broken by id)
    first, _, _ = store.submit(alice, [
        {"function_id": f1, "endpoint_id": e1, "payload": bytes([i]), "group_id": "g"}
        for i in range(25)], online={e1})
    middle = time.time()
    # the next batch is received strictly later
    wait_until(lambda: time.time() > middle, 5, "the clock to move on", interval=0.001)
    second, _, _ = store.submit(alice, [
        {"function_id": f2, "endpoint_id": e2, "payload": bytes([i])} for i in range(5)],
        online=set())
    why = m.ErrorInfo(code="remote_execution_error", message="ValueError: bad",
                      exception=b"x" * 1000)
    store.complete(e1, [m.TaskResult(task_id=t, ok=False, error=why) for t in first[:3]])
    bob_f, _ = store.register_function(bob, "f", "", b"FXF-b")
    bob_e, _ = store.register_endpoint(bob, "e", "c" * 40, {})
    store.submit(bob, [{"function_id": bob_f, "endpoint_id": bob_e, "payload": b""}],
                 online=set())

    everything = _listed(store, alice, limit=4)
    assert len(everything) == 30 == len(set(everything))  # no row skipped nor repeated
    assert everything[:5] == sorted(second, reverse=True)  # newest first, ties by id
    assert set(everything[5:]) == set(first)
    assert _listed(store, alice, limit=1000) == everything

    assert set(_listed(store, alice, states=frozenset({"failed"}), limit=2)) == set(first[:3])
    assert set(_listed(store, alice, states=frozenset({"failed", "waiting_for_endpoint"}))) \
        == set(first[:3]) | set(second)
    assert set(_listed(store, alice, endpoint_id=e2)) == set(second)
    assert set(_listed(store, alice, endpoint_id=e2.upper())) == set(second)
    assert set(_listed(store, alice, function_id=f1, limit=7)) == set(first)
    assert set(_listed(store, alice, group_id="g", states=frozenset({"dispatched"}))) \
        == set(first[3:])
    assert set(_listed(store, alice, since=middle)) == set(second)
    assert set(_listed(store, alice, until=middle, limit=10)) == set(first)
    assert _listed(store, alice, endpoint_id=bob_e) == []  # bob's endpoint: nothing of his
    assert len(_listed(store, bob)) == 1

    page = store.list_tasks(alice, TaskFilter(states=frozenset({"failed"})))
    row = page.tasks[0]
    assert row["state"] == "failed" and row["error"]["message"] == "ValueError: bad"
    assert "payload" not in row and "result" not in row


@pytest.mark.parametrize("filters, word", [
    ({"states": frozenset({"done"})}, "state"),
    ({"endpoint_id": "e1"}, "endpoint_id"),
    ({"function_id": "x" * 36}, "function_id"),
    ({"since": float("nan")}, "since"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "MS4wfG5vdC1hbi1pZA=="}, "cursor"),  # "1.0|not-an-id"
])
def test_bad_filters_are_refused_by_name(filters, word):
    with pytest.raises(InvalidRequest) as refused:
        TaskFilter(**filters)
    assert word in refused.value.message and refused.value.http_status == 422


def test_a_listing_reads_the_owner_and_time_index(tmp_path):
    """SQLite's plan for a page: the (owner, received) index, read in order, with no
    sort of the user's tasks (without the index: a scan or a temporary B-tree)."""
    from sqlalchemy.dialects import sqlite

    from funcx_flows.service.db import make_engine
    from funcx_flows.service.store.listing import page_query

    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    store = Store(engine)
    store.create_schema()
    alice = store.ensure_user("alice")
    with engine.connect() as conn:
        for filters in ({}, {"since": 1.0}, {"group_id": "g"}):
            sql = str(page_query(alice.user_id, TaskFilter(**filters)).compile(
                dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "ix_tasks_owner_received" in plan and "TEMP B-TREE" not in plan, plan
    engine.dispose()
