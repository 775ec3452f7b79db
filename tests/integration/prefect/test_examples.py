"""Every example flow in flows_examples/ runs against a real stack, started as a user's
tests would start it: funcx_flows.testing.running_stack."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from guards import threads_outlive_tests
from prefectruns import REMOTE_TASK_THREADS

from funcx_flows.testing import running_stack

EXAMPLES = Path(__file__).resolve().parents[3] / "flows_examples"


@pytest.fixture(scope="module", autouse=True)
def endpoint(prefect_server: None, request: pytest.FixtureRequest) -> Iterator[str]:
    """The examples' endpoint: theirs is named by FUNCX_FLOWS_EXAMPLE_ENDPOINT."""
    threads_outlive_tests(request.node.nodeid, *REMOTE_TASK_THREADS)
    with running_stack("examples") as stack:
        saved = os.environ.get("FUNCX_FLOWS_EXAMPLE_ENDPOINT")
        os.environ["FUNCX_FLOWS_EXAMPLE_ENDPOINT"] = stack.endpoint
        try:
            yield stack.endpoint
        finally:
            if saved is None:
                os.environ.pop("FUNCX_FLOWS_EXAMPLE_ENDPOINT", None)
            else:
                os.environ["FUNCX_FLOWS_EXAMPLE_ENDPOINT"] = saved


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"flows_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_hello():
    out = load("hello").hello(("a", "b"))
    assert [line.split(",")[0] for line in out] == ["hello a", "hello b"]


def test_fanout(endpoint):
    estimate = load("fanout").fanout(200, endpoint=endpoint)
    assert 3.0 < estimate < 3.3


def test_beamline(tmp_path, endpoint):
    frames = []
    for i in range(5):
        p = tmp_path / f"frame_{i:04d}.raw"
        p.write_bytes(bytes(range(256)) * (i + 1))
        frames.append(str(p))
    summary = load("beamline").beamline(frames, endpoint=endpoint,
                                        publish_dir=str(tmp_path / "pub"))
    assert summary["frames"] == 5 and summary["bytes"] == 256 * 15
    written = json.loads(Path(summary["summary_file"]).read_text())
    assert [f["path"] for f in written["frames_detail"]] == frames
    assert written["frames_detail"][0]["histogram"] == [16] * 16


def test_shell_step(tmp_path, endpoint):
    import hashlib

    data = tmp_path / "frame one.raw"  # a space: the example quotes its paths
    data.write_bytes(b"detector frame")
    out = load("shell_step").checksums([str(data), str(tmp_path / "missing")],
                                           endpoint=endpoint)
    assert out[str(data)] == hashlib.sha256(b"detector frame").hexdigest()
    assert out[str(tmp_path / "missing")].startswith("error: sha256sum:")
