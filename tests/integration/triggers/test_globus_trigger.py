"""The Globus transfer trigger against the real globus-sdk TransferClient talking to a
local HTTP server that plays Transfer (tests/globus_standin.py): filters, paging, rate
limits, restarts, authentication."""

from __future__ import annotations

import json
import time

import pytest
from waiting import wait_until

from funcx_flows.triggers.serve import Running


def test_fires_once_per_matching_task_across_restarts(standin, store, make_trigger):
    calls: list = []
    standin.add("t-old", completed=time.time() - 3600, label="beamline run 1",
                files=["/scratch/old.h5"])
    opts = {"label_pattern": "^beamline", "path_prefix": "/scratch/"}
    with Running(make_trigger(store, calls, **opts)):
        standin.add("t1", label="beamline run 7", files=["/scratch/a.h5", "/scratch/b.h5"])
        standin.add("t2", label="someone else", files=["/scratch/c.h5"])
        standin.add("t3", label="beamline run 8", files=["/home/elsewhere.h5"])
        wait_until(lambda: calls, 20)
        time.sleep(0.5)  # several more polls see the same tasks
    assert calls == [("t1", ["/scratch/a.h5", "/scratch/b.h5"])]  # not t-old: before start
    assert store.get_mark("landed", "completion_time")
    calls2: list = []
    with Running(make_trigger(store, calls2, **opts)):
        standin.add("t4", label="beamline run 9", files=["/scratch/d.h5"])
        wait_until(lambda: calls2, 20)
        time.sleep(0.5)
    assert calls2 == [("t4", ["/scratch/d.h5"])]


def test_rate_limits_back_off_keep_the_watermark_and_lose_nothing(standin, store,
                                                                  make_trigger):
    calls: list = []
    trig = make_trigger(store, calls)
    standin.fail(429, 3)
    standin.add("t1", files=["/a"])
    with Running(trig):
        wait_until(lambda: calls, 30)
    assert calls == [("t1", ["/a"])]
    assert any("slow down" in p for p in trig.problems)


def test_every_page_of_tasks_is_read_and_each_task_fires_once(standin, store, make_trigger):
    standin.page_size = 2
    calls: list = []
    with Running(make_trigger(store, calls)):
        for i in range(7):
            standin.add(f"t{i}", files=[f"/f{i}"])
        wait_until(lambda: len(calls) == 7, 30)
        time.sleep(0.5)
    assert sorted(c[0] for c in calls) == [f"t{i}" for i in range(7)]
    assert any("offset=6" in path for _, path in standin.stats.requests)  # really paged


def test_tasks_that_land_while_it_is_down_fire_after_server_errors(standin, store,
                                                                    make_trigger):
    calls: list = []
    with Running(make_trigger(store, calls)):
        standin.add("t1", files=["/a"])
        wait_until(lambda: calls, 20)
    standin.add("t2", files=["/b"])
    standin.add("t3", files=["/c"])
    standin.fail(503, 3)
    calls2: list = []
    trig = make_trigger(store, calls2)
    with Running(trig):
        wait_until(lambda: len(calls2) == 2, 30)
        time.sleep(0.5)
    assert sorted(calls2) == [("t2", ["/b"]), ("t3", ["/c"])]
    assert any("503" in p for p in trig.problems)
    assert store.counts()["landed"] == {"done": 3}


def test_a_trigger_that_saw_nothing_still_keeps_its_place_across_restarts(standin, store,
                                                                          make_trigger):
    with Running(make_trigger(store)):
        wait_until(lambda: store.get_mark("landed", "floor") is not None, 20)
    standin.add("t-while-down", files=["/a"])
    calls: list = []
    later = make_trigger(store, calls)
    later.clock = lambda: time.time() + 3600  # restarted an hour later, overlap is 60 s
    with Running(later):
        wait_until(lambda: calls, 20)
    assert calls == [("t-while-down", ["/a"])]


def test_stored_user_tokens_and_a_confidential_client_authenticate(standin, tmp_path,
                                                                   monkeypatch):
    from funcx_flows.errors import ConfigError
    from funcx_flows.triggers.config import GlobusAuthConfig
    from funcx_flows.triggers.globus_auth import transfer_client

    url = standin.url
    standin.add("t1", files=["/a"])
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"access_token": "user-token"}))
    since = "completion_time:2000-01-01T00:00:00,"
    transfer_client(GlobusAuthConfig(token_file=str(tokens)), url).task_list(filter=since)
    assert standin.stats.auth_headers[-1] == "Bearer user-token"

    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", url)
    monkeypatch.setenv("FUNCX_FLOWS_GLOBUS_CLIENT_SECRET", "s3cret")
    transfer_client(GlobusAuthConfig(client_id="cid"), url).task_list(filter=since)
    assert any(path.endswith("/v2/oauth2/token") for _, path in standin.stats.requests)
    assert standin.stats.auth_headers[-1] == "Bearer service-token"

    monkeypatch.delenv("FUNCX_FLOWS_GLOBUS_CLIENT_SECRET")
    monkeypatch.delenv("FUNCX_FLOWS_GLOBUS_CLIENT_ID", raising=False)
    with pytest.raises(ConfigError, match="FUNCX_FLOWS_GLOBUS_CLIENT_SECRET"):
        transfer_client(GlobusAuthConfig(), url)
    with pytest.raises(ConfigError, match=r"auth\.token_file"):
        transfer_client(GlobusAuthConfig(token_file=str(tmp_path / "none.json")), url)
