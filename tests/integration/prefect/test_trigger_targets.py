"""Trigger targets against a real Prefect server: a deployment started with an
idempotency key (a repeated start never makes a second flow run), and an event."""

from __future__ import annotations

import time
import uuid

import httpx
from prefect import flow, get_client

from funcx_flows.triggers.config import TargetConfig
from funcx_flows.triggers.state import Run, StateStore
from funcx_flows.triggers.targets import Starter


@flow(name="landed-data")
def landed(paths: list[str]) -> int:
    return len(paths)


def run_of(context):
    return Run(run_id=str(uuid.uuid4()), trigger="det", context=context, state="queued",
               attempts=0, next_at=0.0, error=None, created_at=time.time())


def test_deployment_target_is_idempotent_per_run(prefect_server, tmp_path):
    deployment_id = landed.to_deployment(name="from-trigger").apply()
    store = StateStore(tmp_path / "s.db")
    starter = Starter("det", TargetConfig(kind="deployment",
                                          deployment="landed-data/from-trigger",
                                          parameters={"paths": "{paths}"}), store, 1)
    run = run_of({"paths": ["/a", "/b"]})
    first = starter.start(run)
    again = starter.start(run)  # a retry of the same run
    other = starter.start(run_of({"paths": ["/c"]}))
    assert first == again and first != other
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    mine = [r for r in runs if r.deployment_id == deployment_id]
    assert len(mine) == 2
    assert sorted(r.parameters["paths"] for r in mine) == [["/a", "/b"], ["/c"]]
    starter.close()
    store.close()


def test_event_target_emits_an_event(prefect_server, tmp_path):
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    store = StateStore(tmp_path / "s.db")
    starter = Starter("det", TargetConfig(kind="event", event="beamline.frames.landed",
                                          parameters={"paths": "{paths}", "n": "{count}"}),
                      store, 1)
    starter.start(run_of({"paths": ["/a"], "count": 1}))
    EventsWorker.drain_all()
    url = PREFECT_API_URL.value().rstrip("/") + "/events/filter"
    body = {"filter": {"event": {"name": ["beamline.frames.landed"]}}, "limit": 10}
    deadline = time.monotonic() + 30
    events: list = []
    while not events:
        assert time.monotonic() < deadline, "the event never reached the Prefect API"
        events = httpx.post(url, json=body, timeout=10).json().get("events", [])
        time.sleep(0.3)
    assert events[0]["payload"] == {"paths": ["/a"], "n": 1}
    assert events[0]["resource"]["prefect.resource.id"] == "funcx-flows.trigger.det"
    starter.close()
    store.close()
