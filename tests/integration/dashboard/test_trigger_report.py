"""A trigger process's status reports reach its owner's Triggers page (a real
service; the reporter uses the SDK client, as the trigger CLI does)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest
from dashstack import Dashboard
from waiting import wait_until

from funcx_flows.errors import ConfigError
from funcx_flows.retry import RetryPolicy
from funcx_flows.sdk.client import Client
from funcx_flows.service.ui.session import COOKIE
from funcx_flows.triggers import config as cfg
from funcx_flows.triggers.report import Reporter, snapshot
from funcx_flows.triggers.state import FileVersion, StateStore


def _config(tmp_path: Path, url: str, token: str) -> cfg.TriggersFile:
    return cfg.parse({"report": {"every_s": 1, "service_url": url, "token": token,
                                 "process": "beamline-7"},
                      "triggers": [{"type": "files", "name": "frames",
                                    "paths": [str(tmp_path / "in")],
                                    "target": {"flow": "x:y"}}]})


def _page(dash: Dashboard, token: str, path: str) -> str:
    r = httpx.post(dash.url + "/ui/login", data={"token": token, "next": path})
    found = re.search(rf"{COOKIE}=([^;]+)", r.headers["set-cookie"])
    assert found
    return httpx.get(dash.url + path, headers={"cookie": f"{COOKIE}={found.group(1)}"}).text


def test_the_reports_of_a_trigger_process_show_on_its_owners_page_only(
        dash: Dashboard, tmp_path: Path) -> None:
    config = _config(tmp_path, dash.url, dash.token_a)
    assert config.report is not None
    store = StateStore(tmp_path / "state.db")
    try:
        store.record_files("frames", [FileVersion(f"/in/{i}.h5", 1, i) for i in range(3)])
        store.add_run("frames", {"paths": ["/in/0.h5"]})
        report = snapshot(config, store, "beamline-7", now=10**10)
        frames = report["triggers"][0]
        assert frames["files_seen"] == 3 and frames["files_waiting"] == 3
        assert frames["runs"] == {"queued": 1} and frames["lag_s"] > 0
        with Reporter(config.report, config, store) as reporter:
            wait_until(lambda: reporter.sent >= 1, 30, "a report")
    finally:
        store.close()
    page = _page(dash, dash.token_a, "/ui/triggers")
    assert "beamline-7" in page and str(tmp_path / "in") in page
    assert "beamline-7" not in _page(dash, dash.token_b, "/ui/triggers")


def test_a_service_that_is_away_costs_the_reporter_a_warning_not_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    config = _config(tmp_path, url, "fxf_x")
    assert config.report is not None
    store = StateStore(tmp_path / "state.db")
    client = Client(url, "fxf_x", retry=RetryPolicy(max_attempts=1, sleep=lambda _: None))
    try:
        reporter = Reporter(config.report, config, store, client=client)
        assert reporter.send_once() is False and reporter.send_once() is False
    finally:
        client.close()
        store.close()
    warned = [r for r in caplog.records if "cannot report" in r.getMessage()]
    assert len(warned) == 1  # once, not every period


def test_a_bad_report_setting_is_named() -> None:
    with pytest.raises(ConfigError, match=r"report.every_s"):
        cfg.parse({"report": {"every_s": 0}, "triggers": [
            {"type": "files", "name": "t", "paths": ["/x"], "target": {"flow": "a:b"}}]})
