"""Fixtures shared by every test: a temporary home, a process-leak guard and,
for integration and system tests, a real service with a real local endpoint."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from guards import OUTLIVE_TEST

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


def _alive_descendants() -> dict[int, psutil.Process]:
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p
        except psutil.Error:
            pass
    return out


def _new_roots(before: set[int]) -> list[psutil.Process]:
    """Processes that appeared during a test and do not descend from one that was
    already running (a worker replaced by a long-lived endpoint is not a leak)."""
    now = _alive_descendants()
    roots = []
    for pid, p in now.items():
        if pid in before or pid in OUTLIVE_TEST:
            continue
        try:
            ancestors = {a.pid for a in p.parents()}
        except psutil.Error:
            continue
        if not ancestors & (before | OUTLIVE_TEST):
            roots.append(p)
    return roots


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Every test must end the processes it started."""
    before = set(_alive_descendants())
    yield
    leaked: list[psutil.Process] = []
    for _ in range(50):
        leaked = _new_roots(before)
        if not leaked:
            break
        psutil.wait_procs(leaked, timeout=0.1)
    for p in leaked:  # clean up so one leak does not cascade, then fail
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not leaked, f"test left processes behind: {[_describe(p) for p in leaked]}"


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:200]}"
    except psutil.Error:
        return str(p.pid)


def has_slurm() -> bool:
    return shutil.which("sinfo") is not None
