"""Each install set into a fresh virtualenv, as a light host installs it (the wheel with
--no-deps, then the set's requirements from the package index), and its entry points
run there. Downloads and builds: on only with FUNCX_FLOWS_TEST_INSTALL_SETS=1 (CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CHECKS = {
    "sdk": [["funcx-flows", "task", "list", "--help"],
            ["python", "-c", "from funcx_flows import Client, Executor"]],
    "endpoint": [["funcx-endpoint", "configure", "ep"],
                 ["python", "-c", "import funcx_flows.endpoint.worker, "
                                  "funcx_flows.endpoint.manager, funcx_flows.endpoint.agent, "
                                  "funcx_flows.endpoint.providers.slurm"]],
    "flows": [["python", "-c", "from funcx_flows import remote_task, EndpointTaskRunner"]],
}

pytestmark = pytest.mark.skipif(os.environ.get("FUNCX_FLOWS_TEST_INSTALL_SETS") != "1",
                                reason="set FUNCX_FLOWS_TEST_INSTALL_SETS=1 (downloads)")


def _run(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, f"{args}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout: setuptools builds in the source's build/."""
    folder = tmp_path_factory.mktemp("wheel")
    src = folder / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", ".*cache", ".hypothesis", "__pycache__", "*.db",
        "tests", "benchmarks"))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), str(src))
    return next(folder.glob("funcx_flows-*.whl"))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_set_installs_alone_and_its_entry_points_run(name, wheel, tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    bin_ = venv / "bin"
    _run(str(bin_ / "pip"), "install", "-q", "--no-deps", str(wheel))
    reqs = _run(str(bin_ / "python"), "-m", "funcx_flows.installsets", name).stdout.split()
    _run(str(bin_ / "pip"), "install", "-q", *reqs)
    installed = _run(str(bin_ / "pip"), "list", "--format=freeze").stdout.lower()
    if name != "flows":  # (Prefect itself requires FastAPI, SQLAlchemy and uvicorn)
        for heavy in ("prefect", "fastapi", "sqlalchemy", "uvicorn"):
            assert f"\n{heavy}==" not in f"\n{installed}", (name, heavy)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCX_FLOWS_")}
    env.update(FUNCX_FLOWS_HOME=str(tmp_path / "home"), PATH=f"{bin_}:{env['PATH']}")
    for cmd in CHECKS[name]:
        _run(*cmd, env=env, cwd=tmp_path)
