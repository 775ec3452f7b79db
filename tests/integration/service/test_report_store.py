"""Trigger status reports in the database (service/store/reports.py), on SQLite and
PostgreSQL: the newest per process replaces the last, each user sees only their
own, a user's oldest process makes room past the limit, and a new store on the
same database (a restart, another replica) reads them all."""

from __future__ import annotations

from funcx_flows.service.store import Store


def _report(process: str, seen: int) -> dict[str, object]:
    return {"process": process, "host": "det01", "triggers": [
        {"name": "frames", "files_seen": seen, "watching": ["/data/in"]}]}


def test_reports_replace_evict_stay_per_user_and_outlive_the_store(store: Store):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    store.put_trigger_report(alice, "b7", _report("b7", 1), at=10.0, limit=2)
    store.put_trigger_report(alice, "b7", _report("b7", 5), at=11.0, limit=2)  # replaces
    store.put_trigger_report(alice, "b8", _report("b8", 2), at=12.0, limit=2)
    store.put_trigger_report(bob, "x", _report("x", 3), at=13.0, limit=2)
    mine = store.trigger_reports(alice.user_id)
    assert [(r["process"], r["triggers"][0]["files_seen"], r["received_at"]) for r in mine] \
        == [("b7", 5, 11.0), ("b8", 2, 12.0)]
    store.put_trigger_report(alice, "b9", _report("b9", 9), at=14.0, limit=2)  # b7 makes room
    assert [r["process"] for r in store.trigger_reports(alice.user_id)] == ["b8", "b9"]
    assert [r["process"] for r in store.trigger_reports(bob.user_id)] == ["x"]
    again = Store(store.engine)  # a restarted service, or another replica
    assert [r["process"] for r in again.trigger_reports(alice.user_id)] == ["b8", "b9"]
