"""Fixtures shared by every test: a temporary home, the leak guard (processes,
threads, temporary files) and, for integration and system tests, the stack
factory (tests/stacks.py): a real service with real local endpoints."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import guards
import pytest
import stacks

from funcx_flows.localstack import LocalStack

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when a component is absent on a user's machine; in CI, absence is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this component: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def need() -> Callable[[bool, str], None]:
    """``need(condition, reason)``: skip here, fail in CI (see ``require``)."""
    return require


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("FUNCX_FLOWS_HOME", str(h))
    for var in ("FUNCX_FLOWS_SERVICE_URL", "FUNCX_FLOWS_TOKEN", "FUNCX_FLOWS_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return h


def _become_subreaper() -> None:
    """Orphans of our descendants (daemons that detach) re-parent to us, so the
    leak guard sees them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


_become_subreaper()
TEMPDIR = guards.private_tempdir()
# removed at exit, after what other atexit hooks (Prefect's test harness) remove in it
atexit.register(guards.remove_private_tempdir, TEMPDIR)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test must end the processes and threads it started and remove the
    temporary files (and files in the working tree) it made; the failure names
    them, after ending and removing them so that one leak does not cascade."""
    folders = (TEMPDIR, REPO)
    processes = set(guards.alive_descendants())
    threads = guards.live_threads()
    files = guards.entries(folders)
    yield
    leaks = [f"processes: {p}" for p in [guards.leaked_processes(processes)] if p]
    nodes = [n.nodeid for n in request.node.listchain()]
    leaks += [f"threads: {t}" for t in [guards.leaked_threads(threads, nodes)] if t]
    leaks += [f"temporary files: {f}" for f in [guards.leaked_files(folders, files)] if f]
    if leaks:
        pytest.fail("test left behind " + "; ".join(leaks), pytrace=False)


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[stacks.MakeStack]:
    """``make_stack(**options)``: a stack for this test (see ``stacks.running`` for the
    options; ``name`` picks its home's folder), ended when the test ends."""
    with contextlib.ExitStack() as built:

        def make(name: str = "home", **options: Any) -> LocalStack:
            return built.enter_context(stacks.running(tmp_path / name, **options))

        yield make


# Under pytest-xdist (the README's command runs two workers), the tests of a group
# run one at a time, on one worker: each group shares something machine-wide.
XDIST_GROUPS = {
    "integration/slurm/": "slurm",  # one Slurm cluster, whose queue the tests read
    "integration/multihost/": "multihost",  # network namespaces, and 30 s cut-offs
    # engines' containers, counted machine-wide ("none left behind")
    "integration/fullpath/test_containers.py": "containers",
    "integration/fullpath/test_docker.py": "containers",
    "integration/fullpath/test_warm_containers.py": "containers",
    # the Globus Compute stand-in's port (127.0.0.1:5000)
    "integration/globus_compute/": "globus-compute",
    "integration/prefect/test_globus_compute.py": "globus-compute",
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = item.nodeid.removeprefix("tests/")
        for prefix, group in XDIST_GROUPS.items():
            if where.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))
                break


def has_slurm() -> bool:
    return shutil.which("sinfo") is not None
