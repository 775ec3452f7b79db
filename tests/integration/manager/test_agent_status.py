"""A real agent whose scheduler refuses its block, against a test-owned CurveZMQ
service socket: what the scaler thread saw (the refused block, its note) reaches
the status the loop builds, both the EndpointStatus sent to the service and the
status.json beside the endpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import zmq
from curve_peers import curve_service, running
from waiting import wait_until

from funcx_flows import messages as m
from funcx_flows.endpoint.agent import Agent
from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.providers.base import Block
from funcx_flows.endpoint.providers.inline import InlineProvider


class RefusingProvider(InlineProvider):
    """A scheduler that refuses every submission (a closed queue)."""

    def submit(self, block_id: str, command: str) -> Block:
        raise RuntimeError("sbatch: error: Batch job submission failed: queue closed")


def read_status(folder: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((folder / "status.json").read_text())
    except FileNotFoundError:
        return None
    return data if data["blocks"] else None


def test_a_refused_block_reaches_the_status(tmp_path: Path):
    ctx = zmq.Context()
    sock, reg = curve_service(ctx)
    folder = tmp_path / "ep"
    folder.mkdir()
    agent = Agent(EndpointConfig.model_validate({"provider": "inline", "init_blocks": 1}),
                  folder, reg, RefusingProvider())
    decoder = m.Decoder(m.AGENT_TO_SERVICE)
    with running(agent, sock, ctx):
        assert sock.poll(30_000), "the agent never said hello"
        ident = sock.recv_multipart()[0]
        sock.send_multipart([ident, m.encode(m.Welcome(heartbeat_period_s=2,
                                                       heartbeat_threshold_s=60))])
        status = None
        deadline = time.monotonic() + 30
        while status is None or not status.blocks:
            assert time.monotonic() < deadline, "no status with the block came"
            if sock.poll(200):
                msg = decoder.decode(sock.recv_multipart()[1])
                if isinstance(msg, m.EndpointStatus):
                    status = msg
        (block,) = status.blocks
        assert block.state == "failed" and "queue closed" in block.message
        assert any("could not start" in e and "queue closed" in e
                   for e in status.recent_errors)
        # written after the send
        on_disk = wait_until(lambda: read_status(folder), 30, "status.json")
        assert on_disk is not None, "no status.json"
        assert on_disk["endpoint_id"] == reg.endpoint_id and on_disk["link_up"] is True
        assert [b["state"] for b in on_disk["blocks"]] == ["failed"]
        assert on_disk["results_spooled"] == 0 and "spool_error" not in on_disk
