"""The REST API against a real service: bad input gets a clear 4xx, users are isolated."""

from __future__ import annotations

import base64
import os
import pickle
import uuid

import zmq

from funcx_flows import serialize

PAYLOAD_LIMIT = 64 * 1024  # as set by the api fixture


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def square(x):
    return x * x


def register_function(client, fn=square) -> str:
    r = client.post("/functions", json={"name": "f", "function": b64(serialize.pack_function(fn))})
    assert r.status_code == 200, r.text
    return r.json()["function_id"]


def register_endpoint(client, name="ep") -> str:
    public, _ = zmq.curve_keypair()
    r = client.post("/endpoints", json={"name": name, "public_key": public.decode()})
    assert r.status_code == 200, r.text
    return r.json()["endpoint_id"]


def task(fid, eid, **extra):
    return {"function_id": fid, "endpoint_id": eid,
            "payload": b64(serialize.pack_call((3,), {})), **extra}


def assert_error(r, status, code, *words):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    for w in words:
        assert w.lower() in err["message"].lower(), err


def test_health_needs_no_token_and_openapi_is_served(api):
    with api.anonymous() as anon:
        assert anon.get("/health").json()["status"] == "ok"
        assert anon.get(api.url + "/openapi.json").json()["paths"]["/v1/tasks"]


def test_missing_malformed_and_wrong_tokens_are_401(api):
    with api.anonymous() as anon:
        assert_error(anon.get("/whoami"), 401, "authentication_failed", "missing")
        assert_error(anon.get("/whoami", headers={"Authorization": "Basic x"}), 401,
                     "authentication_failed", "malformed")
        assert_error(anon.get("/whoami", headers={"Authorization": "Bearer nope"}), 401,
                     "authentication_failed", "invalid")


def test_revoked_token_stops_working(api):
    r = api.alice.post("/tokens", json={"name": "short-lived"})
    token_id, token = r.json()["token_id"], r.json()["token"]
    with api.anonymous() as anon:
        headers = {"Authorization": f"Bearer {token}"}
        assert anon.get("/whoami", headers=headers).status_code == 200
        assert api.alice.delete(f"/tokens/{token_id}").json() == {"revoked": token_id}
        assert_error(anon.get("/whoami", headers=headers), 401, "authentication_failed")
    assert_error(api.alice.delete(f"/tokens/{token_id}"), 404, "not_found")


def test_malformed_json_and_wrong_types_are_422(api):
    r = api.alice.post("/tasks", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid_request")
    r = api.alice.post("/tasks", json={"tasks": [{"function_id": 5, "endpoint_id": []}]})
    assert_error(r, 422, "invalid_request", "tasks.0")
    assert_error(api.alice.post("/tasks", json={"tasks": []}), 422, "invalid_request")
    assert_error(api.alice.post("/functions", json={"name": "x", "function": "***"}), 422,
                 "invalid_request", "base64")
    assert_error(api.alice.post("/functions", json={"name": "x", "function": b64(b"plain")}),
                 422, "invalid_request", "envelope")
    assert_error(api.alice.post("/endpoints", json={"name": "e", "public_key": "x" * 39}), 422,
                 "invalid_request", "public_key")
    assert_error(api.alice.post("/functions", json={"name": "x", "function": "AA==",
                                                    "surprise": 1}), 422, "invalid_request")


def test_unknown_ids_are_404(api):
    fid = register_function(api.alice)
    eid = register_endpoint(api.alice, "ep-unknown")
    missing = str(uuid.uuid4())
    assert_error(api.alice.post("/tasks", json={"tasks": [task(missing, eid)]}), 404,
                 "not_found", missing)
    assert_error(api.alice.post("/tasks", json={"tasks": [task(fid, missing)]}), 404,
                 "not_found", missing)
    assert_error(api.alice.post("/tasks", json={"tasks": [task(fid, "not-a-uuid")]}), 404,
                 "not_found")
    assert_error(api.alice.get(f"/tasks/{missing}"), 404, "not_found")
    assert_error(api.alice.get("/tasks/garbage"), 404, "not_found")
    assert_error(api.alice.get(f"/functions/{missing}"), 404, "not_found")
    assert_error(api.alice.get(f"/endpoints/{missing}/status"), 404, "not_found")
    assert_error(api.alice.get("/no-such-route"), 404, "not_found")


def test_users_cannot_see_or_use_each_others_things(api):
    fid = register_function(api.alice)
    eid = register_endpoint(api.alice, "ep-private")
    tid = api.alice.post("/tasks", json={"tasks": [task(fid, eid)]}).json()["task_ids"][0]
    assert_error(api.bob.get(f"/functions/{fid}"), 404, "not_found")
    assert_error(api.bob.get(f"/endpoints/{eid}"), 404, "not_found")
    assert_error(api.bob.get(f"/tasks/{tid}"), 404, "not_found")
    assert api.bob.post("/tasks/fetch", json={"task_ids": [tid]}).json() == {"tasks": []}
    assert api.bob.post("/tasks/cancel", json={"task_ids": [tid]}).json() == {"cancelled": []}
    assert_error(api.bob.post(f"/tasks/{tid}/cancel"), 404, "not_found")
    bob_fid = register_function(api.bob)
    assert_error(api.bob.post("/tasks", json={"tasks": [task(bob_fid, eid)]}), 404, "not_found")
    assert_error(api.bob.post("/tasks", json={"tasks": [task(fid, register_endpoint(
        api.bob, "bob-ep"))]}), 404, "not_found")
    # reusing someone else's task id is refused, and their task is untouched
    r = api.bob.post("/tasks", json={"tasks": [task(bob_fid, register_endpoint(
        api.bob, "bob-ep2"), task_id=tid)]})
    assert_error(r, 409, "conflict")
    assert {e["name"] for e in api.bob.get("/endpoints").json()["endpoints"]} == {
        "bob-ep", "bob-ep2"}
    assert api.alice.get(f"/tasks/{tid}").json()["state"] == "waiting_for_endpoint"
    assert_error(api.bob.delete(f"/endpoints/{eid}"), 404, "not_found")


def test_payload_over_the_limit_is_413_and_nothing_is_stored(api):
    fid = register_function(api.alice)
    eid = register_endpoint(api.alice, "ep-limit")
    big = serialize.pack_call((b"x" * (PAYLOAD_LIMIT + 1),), {})
    ok = task(fid, eid)
    r = api.alice.post("/tasks", json={"tasks": [ok, {**ok, "payload": b64(big)}]})
    assert_error(r, 413, "payload_too_large", "limit")
    assert r.json()["error"]["details"]["limit"] == "max_payload_bytes"
    status = api.alice.get(f"/endpoints/{eid}/status").json()
    assert status["tasks_waiting"] == 0  # all or nothing: the good task was not stored either


def test_resubmitting_a_task_id_is_idempotent(api):
    fid = register_function(api.alice)
    eid = register_endpoint(api.alice, "ep-idem")
    tid = str(uuid.uuid4())
    for _ in range(3):
        r = api.alice.post("/tasks", json={"tasks": [task(fid, eid, task_id=tid)]})
        assert r.json() == {"task_ids": [tid]}
    assert api.alice.get(f"/endpoints/{eid}/status").json()["tasks_waiting"] == 1


def test_function_registration_is_deduplicated(api):
    a = api.alice.post("/functions", json={"name": "f", "function": b64(serialize.pack(square))})
    b = api.alice.post("/functions", json={"name": "g", "function": b64(serialize.pack(square))})
    assert a.json()["function_id"] == b.json()["function_id"]
    assert b.json()["created"] is False


def test_cancel_then_cancel_again_is_409(api):
    fid = register_function(api.alice)
    eid = register_endpoint(api.alice, "ep-cancel")
    tid = api.alice.post("/tasks", json={"tasks": [task(fid, eid)]}).json()["task_ids"][0]
    rec = api.alice.post(f"/tasks/{tid}/cancel").json()
    assert rec["state"] == "cancelled" and rec["error"]["code"] == "cancelled"
    assert_error(api.alice.post(f"/tasks/{tid}/cancel"), 409, "conflict", "cancelled")


class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_the_service_never_unpickles_a_payload(api, tmp_path):
    marker = tmp_path / "unpickled"
    evil = serialize.MAGIC + bytes(serialize._HEADER[3:]) + pickle.dumps(_Boom(str(marker)))
    r = api.alice.post("/functions", json={"name": "evil", "function": b64(evil)})
    fid = r.json()["function_id"]
    eid = register_endpoint(api.alice, "ep-evil")
    t = {"function_id": fid, "endpoint_id": eid, "payload": b64(evil)}
    tid = api.alice.post("/tasks", json={"tasks": [t]}).json()["task_ids"][0]
    assert api.alice.get(f"/tasks/{tid}").status_code == 200
    assert api.alice.get(f"/functions/{fid}").json()["function"] == b64(evil)
    assert not marker.exists()


def test_token_cli_lists_and_revokes(cli):
    out = cli("token", "create", "--user", "carol", "--name", "ci")
    assert out.returncode == 0, out.stderr
    token_id = out.stdout.split()[1]
    listing = cli("token", "list")
    assert token_id in listing.stdout and "carol" in listing.stdout
    import json

    tokens = {t["token_id"]: t for t in json.loads(cli("token", "list", "--json").stdout)
              ["tokens"]}
    assert tokens[token_id]["user"] == "carol" and tokens[token_id]["revoked_at"] is None
    assert cli("token", "revoke", token_id).returncode == 0
    again = cli("token", "revoke", token_id)
    assert again.returncode != 0 and "Traceback" not in again.stderr


def test_sharing_with_named_users_and_with_everyone(api, cli):
    out = cli("token", "create", "--user", "carol")
    assert out.returncode == 0, out.stderr
    carol_token = out.stdout.strip().splitlines()[-1]
    carol = api.anonymous()
    carol.headers["Authorization"] = f"Bearer {carol_token}"
    fid = register_function(api.alice, fn=abs)
    eid = register_endpoint(api.alice, "ep-shared")
    bob_eid = register_endpoint(api.bob, "bob-own")
    assert_error(api.bob.get(f"/functions/{fid}"), 404, "not_found")

    # the function with bob by name: he sees it and may run it on his endpoint
    r = api.alice.put(f"/functions/{fid}/sharing", json={"users": ["bob"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"public": False, "users": ["bob"], "groups": []}
    seen = api.bob.get(f"/functions/{fid}").json()
    assert seen["function_id"] == fid and seen["owned"] is False
    assert api.bob.post("/tasks", json={"tasks": [task(fid, bob_eid)]}).status_code == 200
    assert fid in {f["function_id"] for f in api.bob.get(
        "/functions", params={"shared": "true"}).json()["functions"]}
    assert fid not in {f["function_id"] for f in api.bob.get("/functions").json()["functions"]}
    # ... but not alice's endpoint, which is not shared; and carol sees nothing
    assert_error(api.bob.post("/tasks", json={"tasks": [task(fid, eid)]}), 404, "not_found",
                 "endpoint")
    assert_error(carol.get(f"/functions/{fid}"), 404, "not_found")
    # only the owner changes or reads the sharing, or deletes
    assert_error(api.bob.put(f"/functions/{fid}/sharing", json={"public": True}), 403,
                 "permission_denied", "owner")
    assert_error(api.bob.get(f"/functions/{fid}/sharing"), 403, "permission_denied")
    assert_error(api.bob.delete(f"/functions/{fid}"), 403, "permission_denied")
    assert_error(carol.put(f"/functions/{fid}/sharing", json={"public": True}), 404,
                 "not_found")
    # bad input names the problem
    assert_error(api.alice.put(f"/functions/{fid}/sharing", json={"users": ["nobody"]}), 422,
                 "invalid_request", "nobody")
    assert_error(api.alice.put(f"/functions/{fid}/sharing", json={"groups": ["g1"]}), 422,
                 "invalid_request", "group")
    assert api.alice.get(f"/functions/{fid}/sharing").json()["users"] == ["bob"]

    # the endpoint with everyone: carol and bob may send their own functions to it
    r = api.alice.put(f"/endpoints/{eid}/sharing", json={"public": True})
    assert r.json() == {"public": True, "users": [], "groups": []}
    carol_fid = register_function(carol)
    tid = carol.post("/tasks", json={"tasks": [task(carol_fid, eid)]}).json()["task_ids"][0]
    assert carol.get(f"/tasks/{tid}").json()["state"] == "waiting_for_endpoint"
    assert_error(api.alice.get(f"/tasks/{tid}"), 404, "not_found")  # tasks stay private
    assert carol.get(f"/endpoints/{eid}").json()["owned"] is False
    assert carol.get(f"/endpoints/{eid}/status").status_code == 200
    assert_error(carol.delete(f"/endpoints/{eid}"), 403, "permission_denied")
    assert eid in {e["endpoint_id"] for e in carol.get(
        "/endpoints", params={"shared": "true"}).json()["endpoints"]}
    assert api.bob.post("/tasks", json={"tasks": [task(fid, eid)]}).status_code == 200

    # unsharing takes effect at once
    assert api.alice.put(f"/functions/{fid}/sharing", json={}).json()["users"] == []
    assert api.alice.put(f"/endpoints/{eid}/sharing", json={}).json()["public"] is False
    assert_error(api.bob.get(f"/functions/{fid}"), 404, "not_found")
    assert_error(api.bob.post("/tasks", json={"tasks": [task(fid, bob_eid)]}), 404,
                 "not_found", "function")
    assert_error(carol.post("/tasks", json={"tasks": [task(carol_fid, eid)]}), 404,
                 "not_found", "endpoint")
    carol.close()


def test_tasks_are_listed_with_filters_and_pages_to_their_owner_only(api):
    fid = register_function(api.alice)
    eid = register_endpoint(api.alice, "ep-list")
    ids = api.alice.post("/tasks", json={"tasks": [task(fid, eid, group_id="lst")
                                                   for _ in range(3)]}).json()["task_ids"]
    api.alice.post(f"/tasks/{ids[0]}/cancel")

    def listed(client, **params):
        r = client.get("/tasks", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    page = listed(api.alice, endpoint_id=eid)
    assert sorted(t["task_id"] for t in page["tasks"]) == sorted(ids)
    assert "next_cursor" not in page and "result" not in page["tasks"][0]
    cancelled = listed(api.alice, endpoint_id=eid, state="cancelled")["tasks"]
    assert [(t["task_id"], t["error"]["code"]) for t in cancelled] == [(ids[0], "cancelled")]
    both = listed(api.alice, endpoint_id=eid, state=["cancelled", "waiting_for_endpoint"])
    assert len(both["tasks"]) == 3
    assert len(listed(api.alice, group_id="lst", state="cancelled,success")["tasks"]) == 1
    first = listed(api.alice, endpoint_id=eid, limit=2)
    rest = listed(api.alice, endpoint_id=eid, limit=2, cursor=first["next_cursor"])
    assert len(first["tasks"]) == 2 and len(rest["tasks"]) == 1 and "next_cursor" not in rest
    assert {t["task_id"] for t in first["tasks"] + rest["tasks"]} == set(ids)
    assert len(listed(api.alice, endpoint_id=eid, since="2000-01-01T00:00:00Z")["tasks"]) == 3
    assert listed(api.alice, endpoint_id=eid, until="946684800")["tasks"] == []
    # bob sees none of alice's tasks, even by her endpoint's id
    assert listed(api.bob, endpoint_id=eid)["tasks"] == []
    assert not {t["task_id"] for t in listed(api.bob, limit=1000)["tasks"]} & set(ids)


def test_bad_task_listing_filters_are_422_naming_the_filter(api):
    for params, word in [({"state": "done"}, "state"), ({"endpoint_id": "ep"}, "endpoint_id"),
                         ({"function_id": "1"}, "function_id"),
                         ({"since": "yesterday"}, "since"), ({"until": "nan"}, "until"),
                         ({"limit": "0"}, "limit"), ({"limit": "many"}, "limit"),
                         ({"cursor": "garbage"}, "cursor")]:
        assert_error(api.alice.get("/tasks", params=params), 422, "invalid_request", word)


def test_task_cli_lists_shows_and_cancels_with_json_for_scripts(api, cli):
    import json

    fid = register_function(api.alice)
    eid = register_endpoint(api.alice, "ep-cli-list")
    ids = api.alice.post("/tasks", json={"tasks": [task(fid, eid)
                                                   for _ in range(2)]}).json()["task_ids"]
    out = cli("task", "list", "--endpoint", "ep-cli-list", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(t["task_id"] for t in json.loads(out.stdout)["tasks"]) == sorted(ids)
    out = cli("tasks", "cancel", ids[0], "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"cancelled": [ids[0]]}
    out = cli("task", "list", "--endpoint", eid, "--state", "cancelled", "--since", "1h",
              "--limit", "1", "--all", "--json")
    assert [t["task_id"] for t in json.loads(out.stdout)["tasks"]] == [ids[0]]
    out = cli("task", "show", ids[0], "--json")
    assert json.loads(out.stdout)["state"] == "cancelled"
    table = cli("task", "list", "--endpoint", "ep-cli-list")
    assert table.returncode == 0 and ids[1] in table.stdout, table.stderr
    for args in (("task", "list", "--state", "done"), ("task", "list", "--since", "soon"),
                 ("task", "result", ids[0])):
        bad = cli(*args)
        assert bad.returncode in (1, 2) and "Traceback" not in bad.stderr, bad.stderr
        assert bad.stderr.strip(), args


def test_executor_warns_once_of_an_offline_endpoint_and_refuses_after_shutdown(api):
    import warnings

    import pytest

    from funcx_flows import Client, Executor
    from funcx_flows.errors import EndpointOfflineWarning

    eid = register_endpoint(api.alice, "ep-never-started")
    client = Client(api.url, api.alice.headers["Authorization"].split()[1])
    ex = Executor(endpoint_id=eid, client=client)
    try:
        with pytest.warns(EndpointOfflineWarning, match="ep-never-started.*offline"):
            first = ex.submit(abs, -1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once per executor, not per task
            second = ex.submit(abs, -2)
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    assert first.cancelled() and second.cancelled()
    for call in (lambda: ex.submit(abs, -3), lambda: ex.map(abs, [1])):
        with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
            call()
    client.close()
