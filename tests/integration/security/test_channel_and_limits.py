"""No one let in: the CurveZMQ channel refuses unknown keys and stolen ids, bad frames
do not hurt the service, per-user limits answer 429, and the REST API survives
schema-driven fuzzing with no 5xx."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zmq
from stacks import running

from funcx_flows import messages as m
from funcx_flows import serialize
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.client import b64encode


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running(Path(tmp_path_factory.mktemp("sec")) / "home",
                 env={"FUNCX_FLOWS_RATE_LIMIT_PER_S": "20",
                      "FUNCX_FLOWS_MAX_TASKS_IN_FLIGHT": "5"}) as s:
        yield s


def dealer(ctx, url, server_key, public, secret, identity):
    sock = ctx.socket(zmq.DEALER)
    sock.curve_serverkey = server_key.encode()
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.routing_id = identity.encode()
    sock.linger = 0
    sock.connect(url)
    return sock


def hello(endpoint_id):
    return m.encode(m.Hello(endpoint_id=endpoint_id, agent_version="x", python_version="3.11",
                            hostname="attacker"))


def answers(sock, timeout_ms=2000):
    return bool(sock.poll(timeout_ms))


def register(client, name):
    public, secret = zmq.curve_keypair()
    info = client.register_endpoint(name, public.decode())
    return info, public, secret


def test_unknown_keys_and_stolen_ids_get_nothing(stack):
    client = stack.client()
    victim, _, _ = register(client, "victim")
    mine, my_pub, my_sec = register(client, "mine")
    fid = client.register_function(pow)
    client.submit_tasks([{"function_id": fid, "endpoint_id": victim["endpoint_id"],
                          "payload": b64encode(serialize.pack_call((2, 3), {}))}])
    ctx = zmq.Context()
    try:
        stranger_pub, stranger_sec = zmq.curve_keypair()
        s1 = dealer(ctx, victim["zmq_url"], victim["service_public_key"], stranger_pub,
                    stranger_sec, victim["endpoint_id"])
        s1.send(hello(victim["endpoint_id"]))
        assert not answers(s1), "an unregistered key got an answer"
        # a registered key claiming another endpoint's id gets nothing either
        s2 = dealer(ctx, mine["zmq_url"], mine["service_public_key"], my_pub, my_sec,
                    victim["endpoint_id"])
        s2.send(hello(victim["endpoint_id"]))
        assert not answers(s2), "a stolen endpoint id got an answer"
        # the same key under its own id is welcome: the refusals above were about identity
        s3 = dealer(ctx, mine["zmq_url"], mine["service_public_key"], my_pub, my_sec,
                    mine["endpoint_id"])
        s3.send(hello(mine["endpoint_id"]))
        assert answers(s3, 10000)
        assert isinstance(m.Decoder(m.SERVICE_TO_AGENT).decode(s3.recv()), m.Welcome)
        for s in (s1, s2, s3):
            s.close()
    finally:
        ctx.destroy(linger=0)
        client.close()


def test_malformed_frames_do_not_hurt_the_service(stack):
    client = stack.client()
    ep, pub, sec = register(client, "fuzzed")
    ctx = zmq.Context()
    try:
        s = dealer(ctx, ep["zmq_url"], ep["service_public_key"], pub, sec, ep["endpoint_id"])
        for junk in (b"", b"\x00" * 10, b"\x81\xa2op\xa5hello", m.encode(m.Heartbeat(sent_at=1))
                     [:-1], b"\xc1" * 100, m.encode({"op": "results", "v": 1, "results": 5}),
                     m.encode({"op": "hello", "v": 99, "endpoint_id": "x"})):
            s.send(junk)
        s.send_multipart([b"a", b"b", b"c"])
        s.send(hello(ep["endpoint_id"]))
        assert answers(s, 10000)
        assert isinstance(m.Decoder(m.SERVICE_TO_AGENT).decode(s.recv()), m.Welcome)
        s.close()
    finally:
        ctx.destroy(linger=0)
    assert client.health()["status"] == "ok"
    client.close()


def test_tasks_in_flight_limit_is_a_429_that_names_it(stack):
    client = stack.client()
    ep, _, _ = register(client, "queue-only")
    fid = client.register_function(pow)
    task = {"function_id": fid, "endpoint_id": ep["endpoint_id"],
            "payload": b64encode(serialize.pack_call((2, 3), {}))}
    with httpx.Client(base_url=stack.service_url + "/v1",
                      headers={"Authorization": f"Bearer {client.token}"}) as http:
        r = http.post("/tasks", json={"tasks": [task] * 6})
        assert r.status_code == 429
        assert r.json()["error"]["details"]["limit"] == "max_tasks_in_flight"
        assert "in flight" in r.json()["error"]["message"]
    client.close()


def test_requests_per_second_limit_is_a_429(stack):
    client = stack.client()
    with httpx.Client(base_url=stack.service_url + "/v1",
                      headers={"Authorization": f"Bearer {client.token}"}) as http:
        time.sleep(5)  # a full bucket
        codes = [http.get("/whoami").status_code for _ in range(200)]
        limited = http.get("/whoami")
    assert 200 in codes and 429 in codes
    if limited.status_code == 429:
        assert limited.json()["error"]["details"]["limit"] == "rate_limit_per_s"
    client.close()


def test_the_api_survives_schema_driven_fuzzing(make_stack, need):
    st = shutil.which("schemathesis")
    need(st is not None, "schemathesis (pip install -e '.[test]')")
    s = make_stack()
    token = (s.home / "token").read_text().strip()
    out = subprocess.run(
        [st, "run", s.service_url + "/openapi.json", "-H", f"Authorization: Bearer {token}",
         "-c", "not_a_server_error,status_code_conformance,response_schema_conformance",
         "-n", "25", "--seed", "7", "--phases", "examples,coverage,fuzzing"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:]
