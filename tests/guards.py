"""The leak guard's parts (used by the autouse fixture in tests/conftest.py): a test
must end the processes and threads it started and remove the temporary files it
made, or it fails naming them.

What legitimately outlives a test is registered here by whoever owns it (a
longer-lived fixture, a process-wide singleton), never by the test that leaked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import psutil

# Processes that a longer-lived fixture started again during a test (a module's
# proxy restarted by a fault test): the fixture ends them, not the test.
OUTLIVE_TEST: set[int] = set()

# Threads of process-wide singletons that a test may be the first to start and that
# live until the interpreter ends, by the qualified name of the function they run.
OUTLIVE_THREADS: set[str] = {
    # globus-compute-sdk's Executor: one thread per process that waits for the main
    # thread to end, then shuts its executors down
    "globus_compute_sdk.sdk.executor.__atexit",
    # PSI/J's local executor: one reaper of child processes per process
    "psij.executors.local._ProcessReaper",
    # PSI/J's batch executors: a queue-polling thread each, which PSI/J gives no way
    # to stop; it ends by itself once its executor is garbage collected
    "psij.executors.batch.batch_scheduler_executor._QueuePollThread",
    # pyzmq's one garbage collector of zero-copy messages
    "zmq.utils.garbage.GarbageCollectorThread",
}
# ... and by name, where the function is a library's generic one.
OUTLIVE_THREAD_NAMES: tuple[str, ...] = (
    # Prefect's process-wide services: its loop, and the log, event and concurrency
    # workers, started again on the next use after a drain stops them
    "GlobalEventLoopThread", "RunSyncEventLoopThread", "APILogWorkerThread", "EventsWorkerThread",
    "ConcurrencySlotAcquisitionWithLeaseServiceThread",
    # AnyIO's pool of worker threads of a loop: each ends after 10 s idle
    "AnyIO worker thread",
)


# Threads that a longer-lived fixture's object starts lazily, during a test, and
# that end with the fixture: thread-name prefixes by the fixture's node id (its
# module's, or the session's "").
FIXTURE_THREADS: dict[str, tuple[str, ...]] = {}


def outlives_test(pid: int) -> None:
    OUTLIVE_TEST.add(pid)


def threads_outlive_tests(node_id: str, *name_prefixes: str) -> None:
    """Said by a fixture of ``node_id`` (``request.node.nodeid``) whose object starts
    threads while the tests use it (an event loop's executor threads), named so, or
    running code whose ``module.qualname`` starts so (a library's unnamed threads)."""
    FIXTURE_THREADS[node_id] = FIXTURE_THREADS.get(node_id, ()) + name_prefixes


# ----------------------------------------------------------------- processes --

def alive_descendants() -> dict[int, psutil.Process]:
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p
        except psutil.Error:
            pass
    return out


def new_process_roots(before: set[int]) -> list[psutil.Process]:
    """Processes that appeared during a test and do not descend from one that was
    already running (a worker replaced by a long-lived endpoint is not a leak)."""
    roots = []
    for pid, p in alive_descendants().items():
        if pid in before or pid in OUTLIVE_TEST:
            continue
        try:
            ancestors = {a.pid for a in p.parents()}
        except psutil.Error:
            continue
        if not ancestors & (before | OUTLIVE_TEST):
            roots.append(p)
    return roots


# How long a test's processes and threads are given to end after it (the guard's
# own test shortens it: it waits for leaks on purpose).
GRACE_S = float(os.environ.get("FUNCX_FLOWS_TEST_LEAK_GRACE_S", "5"))


def leaked_processes(before: set[int]) -> list[str]:
    """Wait up to GRACE_S for the test's processes to end; kill and name the rest
    (so one leak does not cascade into the next test)."""
    leaked: list[psutil.Process] = []
    for _ in range(max(1, int(GRACE_S * 10))):
        leaked = new_process_roots(before)
        if not leaked:
            return []
        psutil.wait_procs(leaked, timeout=0.1)
    names = [describe_process(p) for p in leaked]
    for p in leaked:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return names


def describe_process(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:200]}"
    except psutil.Error:
        return str(p.pid)


# ------------------------------------------------------------------- threads --

def live_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def leaked_threads(before: set[threading.Thread], node_ids: Iterable[str],
                   grace_s: float = GRACE_S) -> list[str]:
    """Threads started during the test and still alive after a join of up to
    ``grace_s`` in all (a thread told to stop may take a poll interval to see it);
    ``node_ids``: the test's and its parents' (see ``threads_outlive_tests``)."""
    shared = OUTLIVE_THREAD_NAMES + tuple(
        p for n in node_ids for p in FIXTURE_THREADS.get(n, ()))
    new = [t for t in live_threads() - before
           if thread_target(t) not in OUTLIVE_THREADS and not t.name.startswith(shared)
           and not thread_target(t).startswith(shared)]
    per_thread = grace_s / max(1, len(new))
    for t in new:
        t.join(per_thread)
    return [describe_thread(t) for t in new if t.is_alive()]


def thread_target(t: threading.Thread) -> str:
    """``module.qualname`` of what the thread runs (its class's, for a subclass)."""
    target = getattr(t, "_target", None)
    where = getattr(target, "__qualname__", None) or type(t).__qualname__
    module = getattr(target, "__module__", None) or type(t).__module__
    return f"{module}.{where}"


def describe_thread(t: threading.Thread) -> str:
    return f"{t.name!r} ({thread_target(t)}{', daemon' if t.daemon else ''})"


# -------------------------------------------------------------- temporary files --

def private_tempdir() -> Path:
    """Point this process and its children at a temporary folder of their own, so
    that what other programs on the machine put in /tmp is not taken for a leak;
    pytest's own ``tmp_path`` stays where it was."""
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    folder = Path(tempfile.mkdtemp(prefix="funcx-tests-"))
    os.chmod(folder, 0o1777)  # as /tmp: a test's PostgreSQL runs as another user
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # recomputed from TMPDIR
    return folder


def remove_private_tempdir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# What tools (not tests) create in the working tree on first use.
TOOL_FILES = frozenset({".hypothesis", ".pytest_cache", "__pycache__", ".mypy_cache",
                        ".ruff_cache", ".coverage", ".schemathesis"})


def entries(folders: Iterable[Path]) -> set[Path]:
    out: set[Path] = set()
    for folder in folders:
        with contextlib.suppress(OSError):
            out.update(folder / name for name in os.listdir(folder)
                       if name not in TOOL_FILES)
    return out


def leaked_files(folders: Iterable[Path], before: set[Path]) -> list[str]:
    """Entries of ``folders`` that the test made and left; removed after naming
    them (so one leak does not cascade)."""
    leaked = sorted(entries(folders) - before)
    for path in leaked:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return [str(p) for p in leaked]
