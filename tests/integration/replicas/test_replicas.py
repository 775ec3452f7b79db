"""Any replica serves anyone: tasks, results, cancels and endpoint status cross
replicas through the database and its LISTEN/NOTIFY; a replica killed mid-run loses
nothing. (The kill comes last: the module's cluster has two replicas after it.)"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
import uuid
from concurrent.futures import as_completed

import pytest
import sqlalchemy as sa
import zmq
from replicastack import PG_URL, Cluster
from waiting import wait_until

from funcx_flows import serialize
from funcx_flows.errors import RateLimited
from funcx_flows.retry import RetryPolicy
from funcx_flows.sdk.client import b64encode
from funcx_flows.sdk.executor import Executor
from funcx_flows.service.replica_state import ReplicaState


def square(x):
    return x * x


def sleeper(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_tasks_and_results_cross_replicas(cluster: Cluster) -> None:
    """A client on each replica, straight (no proxy): the endpoint is linked to one
    of them, so at least two clients submit on a replica that does not hold the
    link and read results finished on another."""
    eid = cluster.stack.endpoints["ep"].endpoint_id
    for i in range(3):
        with cluster.client(i) as client, Executor(endpoint_id=eid, client=client) as ex:
            futures = {ex.submit(square, n): n for n in range(50)}
            for f in as_completed(futures, timeout=120):
                assert f.result() == futures[f] ** 2


def test_endpoint_status_from_every_replica(cluster: Cluster) -> None:
    eid = cluster.stack.endpoints["ep"].endpoint_id
    for i in range(3):
        with cluster.client(i) as client:
            # as the holder last recorded it: changes reach the others within a second
            status = wait_until(lambda c=client: _with_workers(c.get_endpoint_status(eid)),
                                30, f"replica {i} to see the endpoint's workers")
            assert status["state"] == "online", (i, status)
            assert status["blocks"], (i, status)


def _with_workers(status):
    return status if status["workers_total"] >= 2 else None


def test_a_cancel_through_another_replica_stops_the_running_task(cluster: Cluster) -> None:
    eid = cluster.stack.endpoints["ep"].endpoint_id
    holder = cluster.holder_pid(eid)
    others = [i for i, r in enumerate(cluster.replicas) if r.proc and r.proc.pid != holder]
    with cluster.client(others[0]) as submitter, cluster.client(others[1]) as canceller:
        fid = submitter.register_function(sleeper)
        [tid] = submitter.submit_tasks([{
            "function_id": fid, "endpoint_id": eid,
            "payload": b64encode(serialize.pack_call((120,), {}))}])
        wait_until(lambda: canceller.get_task(tid)["state"] == "running", 60,
                   "the sleeper to run")
        canceller.cancel(tid)
        assert submitter.get_task(tid)["state"] == "cancelled"
        # the endpoint was told (by the replica that holds its link): its worker is
        # free long before the sleeper's 120 s
        wait_until(lambda: submitter.get_endpoint_status(eid)["tasks_running"] == 0, 30,
                   "the cancelled task to stop running on the endpoint")


def counted(path, x):
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x * x


def test_memoized_answers_and_their_records_through_another_replica(
        cluster: Cluster, tmp_path) -> None:
    """Calls memoized through one replica answer repeated calls through another
    without running, their records pushed to that replica's stream (the answer
    is finished where it is submitted, not where the endpoint is linked)."""
    eid = cluster.stack.endpoints["ep"].endpoint_id
    log = str(tmp_path / "calls.log")
    with cluster.client(0) as a, Executor(endpoint_id=eid, client=a, memoize=True) as ex:
        assert [ex.submit(counted, log, i).result(60) for i in range(5)] == [
            i * i for i in range(5)]
    with cluster.client(1) as b, Executor(endpoint_id=eid, client=b, memoize=True) as ex:
        again = [ex.submit(counted, log, i) for i in range(5)]
        assert [f.result(60) for f in again] == [i * i for i in range(5)]
        records = b.fetch_tasks([f.task_id for f in again])
    with open(log) as f:
        assert sorted(int(x) for x in f.read().split()) == list(range(5))  # ran once each
    assert [r["attempts"] for r in records] == [0] * 5


def test_an_endpoint_deleted_through_another_replica_loses_its_link(cluster: Cluster) -> None:
    ep = cluster.stack.start_endpoint("doomed", {"max_workers_per_node": 1,
                                                 "provider": "local", "link": "websocket"})
    try:
        holder = cluster.holder_pid(ep.endpoint_id)
        other = next(i for i, r in enumerate(cluster.replicas)
                     if r.proc and r.proc.pid != holder)
        with cluster.client(other) as client:
            client.delete_endpoint(ep.endpoint_id)
        log = ep.folder / "foreground.log"
        # the holder was told (ff_forget) and said goodbye on the link
        wait_until(lambda: "endpoint deleted" in log.read_text(), 30,
                   "the endpoint to hear it was deleted")
    finally:
        cluster.stack.stop_endpoint("doomed")


def test_the_same_resubmission_through_two_replicas_at_once_is_one_batch(
        cluster: Cluster) -> None:
    """Ten rounds of one batch sent through two replicas at the same moment: both
    answer with its ids, and each task is stored (and runs) once."""
    eid = cluster.stack.endpoints["ep"].endpoint_id
    once = RetryPolicy(max_attempts=0)  # a refusal is seen, not retried away
    with cluster.client(0, once) as a, cluster.client(1, once) as b:
        fid = a.register_function(square)
        all_ids: list[str] = []
        for _ in range(10):
            batch = [{"task_id": str(uuid.uuid4()), "function_id": fid, "endpoint_id": eid,
                      "payload": b64encode(serialize.pack_call((n,), {}))} for n in range(200)]
            ids = [t["task_id"] for t in batch]
            assert _at_once({"a": functools.partial(a.submit_tasks, batch),
                             "b": functools.partial(b.submit_tasks, batch)}) == {"a": ids, "b": ids}
            all_ids += ids
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM tasks WHERE task_id = ANY(:i)"),
                                  {"i": all_ids}).scalar_one()
    finally:
        engine.dispose()
    assert stored == len(all_ids)
    with cluster.client(2) as c:
        wait_until(lambda: {r["state"] for r in c.fetch_tasks(all_ids)} == {"success"}, 120,
                   "the batches to run")


def _at_once(calls):
    """Each call in its own thread, released together; their answers (or errors)."""
    answers = {}
    start = threading.Barrier(len(calls))

    def run(name, call):
        start.wait()
        try:
            answers[name] = call()
        except Exception as exc:  # the failure is what the test reports
            answers[name] = exc

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def test_the_rate_limit_is_counted_once_for_all_replicas(cluster: Cluster) -> None:
    """Two replicas' shares of one user's bucket: 2 requests/s, a burst of 10 in all."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            user_id = conn.execute(sa.text("SELECT user_id FROM users LIMIT 1")).scalar_one()
        one, two = ReplicaState(engine, "one:1"), ReplicaState(engine, "two:2")
        taken = 0
        with pytest.raises(RateLimited) as refused:
            for i in range(40):
                (one if i % 2 else two).take_request(user_id, 2.0)
                taken += 1
        # the burst and what refilled while the loop ran (fast: well under 2 s)
        assert 10 <= taken <= 13, taken
        assert refused.value.details["limit"] == "rate_limit_per_s"
    finally:
        engine.dispose()


def test_the_links_other_replicas_hold_are_read_in_one_query(cluster: Cluster) -> None:
    """Listing endpoints reads every link held elsewhere at once (it was a query per
    endpoint): fresh records of online links only, with the replica that holds each."""
    engine = sa.create_engine(PG_URL)
    try:
        with cluster.client() as c:
            ids = [str(c.register_endpoint(f"away-{i}", zmq.curve_keypair()[0].decode())
                       ["endpoint_id"]) for i in range(4)]
        try:
            one, two = ReplicaState(engine, "one:1"), ReplicaState(engine, "two:2")
            one.record_link(ids[0], True, {"state": "online", "workers_total": 3})
            two.record_link(ids[1], True, {"state": "online", "workers_total": 5})
            two.record_link(ids[2], True, {"state": "online"})
            two.record_link(ids[2], False, {"state": "offline"})  # it went away since
            statements: list[str] = []
            sa.event.listen(engine, "before_cursor_execute",
                            lambda _c, _cur, statement, *_: statements.append(statement))
            found = one.links_of(ids, fresh_s=60)
            assert len(statements) == 1, statements
            assert found[ids[0]]["workers_total"] == 3 and found[ids[0]]["replica"] == "one:1"
            assert found[ids[1]]["workers_total"] == 5 and found[ids[1]]["replica"] == "two:2"
            assert ids[2] not in found and ids[3] not in found  # offline now; never linked
            assert one.links_of(ids, fresh_s=0) == {}  # every record is stale by then
            with cluster.client() as c:
                listed = {e["endpoint_id"]: e["state"] for e in c.list_endpoints()}
            assert listed[ids[0]] == listed[ids[1]] == "online"
            assert listed[ids[2]] == listed[ids[3]] == "offline"
        finally:
            with cluster.client() as c:
                for eid in ids:
                    c.delete_endpoint(eid)
    finally:
        engine.dispose()


def test_a_replica_killed_mid_run_loses_nothing(cluster: Cluster) -> None:
    """kill -9 the replica that holds the endpoint's link with 2,000 tasks in
    flight, submitted and streamed through the proxy: the link and the client's
    stream come back through the survivors, every task ends, every result once."""
    eid = cluster.stack.endpoints["ep"].endpoint_id
    victim = next(r for r in cluster.replicas if r.proc and r.proc.pid == cluster.holder_pid(eid))
    with cluster.client() as client, Executor(endpoint_id=eid, client=client) as ex:
        futures = {ex.submit(sleeper, 0.01): n for n in range(2000)}
        seen = 0
        killed = False
        deadline = time.monotonic() + 600
        for f in as_completed(futures, timeout=600):
            assert f.result() == 0.01
            seen += 1
            if seen == 300 and not killed:
                assert victim.proc is not None
                os.kill(victim.proc.pid, signal.SIGKILL)
                victim.proc.wait(10)
                killed = True
            assert time.monotonic() < deadline
        assert killed and seen == 2000
        ids = [f.task_id for f in futures]
        states = {r["state"] for r in client.fetch_tasks(ids)}
        assert states == {"success"}
    # the endpoint's link is held by a survivor now
    assert cluster.holder_pid(eid) != victim.proc.pid


def test_a_trigger_report_sent_to_one_replica_shows_on_anothers_page(cluster: Cluster
                                                                      ) -> None:
    """The Triggers page reads the reports from the database (each replica kept only
    what was posted to it)."""
    import re

    import httpx

    from funcx_flows.service.ui.session import COOKIE

    process = f"beamline-{uuid.uuid4().hex[:6]}"
    sent = httpx.post(cluster.replicas[0].url + "/v1/triggers/status",
                      headers={"authorization": f"Bearer {cluster.token}"},
                      json={"process": process, "host": "det01",
                            "triggers": [{"name": "frames", "watching": ["/data/in"]}]})
    assert sent.status_code == 200, sent.text
    other = cluster.replicas[1].url
    login = httpx.post(other + "/ui/login", data={"token": cluster.token, "next": "/ui/triggers"})
    cookie = re.search(rf"{COOKIE}=([^;]+)", login.headers["set-cookie"])
    assert cookie is not None
    page = httpx.get(other + "/ui/triggers", headers={"cookie": f"{COOKIE}={cookie.group(1)}"})
    assert page.status_code == 200 and process in page.text and "/data/in" in page.text
