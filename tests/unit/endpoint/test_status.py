"""The endpoint's status builder: the interchange's load, the scaler's blocks and
every part's recent errors in one EndpointStatus; status.json beside it, written
whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

from funcx_flows import messages as m
from funcx_flows.endpoint.scaler import BlockRecord, ScalerReport
from funcx_flows.endpoint.status import STATUS_FILE, StatusBuilder

REPORT = ScalerReport((BlockRecord("b1", "42", "failed", 2, 1000.0, "queue closed"),
                       BlockRecord("b2", "43", "running", 2, 1001.0, "")))


def test_the_status_has_the_load_the_blocks_and_every_parts_errors():
    load = m.EndpointStatus(workers_total=4, tasks_queued=3,
                            recent_errors=["from the interchange's last status"])
    status = StatusBuilder.build(load, REPORT, ["manager lost", "block b1 could not start"])
    assert status.workers_total == 4 and status.tasks_queued == 3
    assert [(b.block_id, b.job_id, b.state, b.nodes, b.message) for b in status.blocks] == [
        ("b1", "42", "failed", 2, "queue closed"), ("b2", "43", "running", 2, "")]
    assert status.recent_errors == ["manager lost", "block b1 could not start"]


def test_status_json_says_what_only_this_host_knows(tmp_path: Path):
    builder = StatusBuilder("ep-1", tmp_path)
    status = StatusBuilder.build(m.EndpointStatus(workers_total=2), REPORT, [])
    builder.write(status, link_up=True, results_spooled=5, spool_error="")
    data = json.loads((tmp_path / STATUS_FILE).read_text())
    assert data["endpoint_id"] == "ep-1" and data["link_up"] is True
    assert data["results_spooled"] == 5 and data["pid"] == os.getpid()
    assert data["workers_total"] == 2 and len(data["blocks"]) == 2
    assert "spool_error" not in data
    builder.write(status, link_up=False, results_spooled=5, spool_error="disk full")
    assert json.loads((tmp_path / STATUS_FILE).read_text())["spool_error"] == "disk full"


def test_a_folder_that_cannot_be_written_keeps_the_last_status(tmp_path: Path):
    builder = StatusBuilder("ep-1", tmp_path)
    status = StatusBuilder.build(m.EndpointStatus(), REPORT, [])
    builder.write(status, link_up=True, results_spooled=0, spool_error="")
    (tmp_path / (STATUS_FILE + ".tmp")).mkdir()  # the temporary file cannot be made
    builder.write(status, link_up=False, results_spooled=0, spool_error="")  # no raise
    assert json.loads((tmp_path / STATUS_FILE).read_text())["link_up"] is True
