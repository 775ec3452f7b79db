"""Globus Compute users' habits with funcx-endpoint: -h, --version and version,
--debug, an endpoint's id wherever its name goes, and delete asking first."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from funcx_flows import __version__

ID = "0c5f2b8e-8d1d-4c53-9d55-2f5f2a5f0b19"


def cli(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from funcx_flows.endpoint.cli import main; main()", *args],
        capture_output=True, text=True, timeout=60, input=stdin,
        env={"FUNCX_FLOWS_HOME": str(home), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def configured(tmp_path: Path) -> Path:
    """An endpoint configured and registered once (its id known), not running."""
    home = tmp_path / "home"
    assert cli(home, "configure", "beamline").returncode == 0
    folder = home / "endpoints" / "beamline"
    (folder / "endpoint.json").write_text(json.dumps({"endpoint_id": ID, "name": "beamline"}))
    return home


def test_help_version_and_debug(tmp_path):
    short = cli(tmp_path, "-h")
    assert short.returncode == 0 and "configure" in short.stdout and "--debug" in short.stdout
    assert cli(tmp_path, "status", "-h").returncode == 0
    for args in (("--version",), ("version",)):
        out = cli(tmp_path, *args)
        assert out.returncode == 0 and __version__ in out.stdout, out


def test_debug_reaches_the_endpoint_log(monkeypatch, tmp_path):
    from funcx_flows.endpoint.daemon import LOG_LEVEL_ENV, setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.setenv(LOG_LEVEL_ENV, "DEBUG")  # what `funcx-endpoint --debug` sets
        setup_logging(tmp_path / "endpoint.log")
        assert root.level == logging.DEBUG
        monkeypatch.setenv(LOG_LEVEL_ENV, "LOUD")  # nonsense: the default, not a crash
        setup_logging(tmp_path / "endpoint.log")
        assert root.level == logging.INFO
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_the_endpoint_id_works_where_the_name_does(configured):
    by_id = cli(configured, "status", ID)
    assert by_id.returncode == 0 and "endpoint beamline: stopped" in by_id.stdout
    unknown = cli(configured, "status", "0c5f2b8e-0000-4c53-9d55-2f5f2a5f0b19")
    assert unknown.returncode == 1 and "not configured" in unknown.stderr


def test_delete_asks_unless_yes(configured):
    folder = configured / "endpoints" / "beamline"
    kept = cli(configured, "delete", "beamline", stdin="n\n")
    assert kept.returncode != 0 and "delete endpoint beamline" in kept.stdout
    assert folder.exists()
    asked = cli(configured, "delete", ID, stdin="y\n")
    assert asked.returncode == 0, asked.stderr
    assert not folder.exists()
    assert cli(configured, "configure", "other").returncode == 0
    assert cli(configured, "delete", "other", "--yes").returncode == 0
    assert not (configured / "endpoints" / "other").exists()
