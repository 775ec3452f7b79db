"""Queue depths of many endpoints in one query (the dashboard's endpoints page
listed them with one query per endpoint), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from funcx_flows import messages as m
from funcx_flows.service.store import Store


def test_the_depths_of_many_endpoints_are_one_query(store: Store):
    alice = store.ensure_user("alice")
    fn, _ = store.register_function(alice, "f", "", b"FXF-1")
    eps = [store.register_endpoint(alice, f"e{i}", chr(97 + i) * 40, {})[0] for i in range(3)]
    busy, idle, done = eps
    store.submit(alice, [{"function_id": fn, "endpoint_id": busy,
                         "payload": bytes([i])} for i in range(4)], online=set())
    finished, _, _ = store.submit(alice, [{"function_id": fn, "endpoint_id": done,
                                           "payload": b"x"}], online={done})
    store.complete(done, [m.TaskResult(task_id=t, ok=True, data=b"r") for t in finished])
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_):  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        depths = store.queue_depths_of(eps)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    assert len([s for s in statements if "count" in s.lower()]) == 1, statements
    assert sum(depths[busy].values()) == 4  # unfinished only, by state
    assert depths[idle] == {} and depths[done] == {}
    assert depths == {eid: store.queue_depths(eid) for eid in eps}  # the one-endpoint read
    assert store.queue_depths_of([]) == {}
