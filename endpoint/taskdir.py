"""A fresh working folder per task: the endpoint's ``task_dir:`` section.

With ``task_dir: {root: /scratch/tasks, keep_on_failure: true}`` a worker runs
each task in a folder of its own, made for it and removed when it ends::

    ROOT/funcx-task-<task id>-<attempt>-<random>.running-<worker pid>/
        work/   the task's working directory (cwd), empty when it starts
        tmp/    TMPDIR, TEMP and TMP point here; Python's tempfile uses it too

A task that fails (it raised, or its result could not be sent) leaves its folder
in place when ``keep_on_failure`` is set, renamed without ``.running-<pid>``, and
its error says where. Between tasks
the worker goes back to its own working directory and environment (a task that
set variables does not leak them into the next one). A worker killed in the
middle of a task cannot clean up: its manager removes the folder of the task it
was running (a cancel, the manager stopping), or keeps it when the worker died on
its own and failed tasks' folders are kept (forked workers; a container's or a
bubblewrap sandbox's folders go with them).

This is tidiness, not confinement: the task runs as the same OS user, sees the
same file system (absolute paths, other tasks' folders under ROOT), the same
network and the same processes. ``sandbox: bwrap`` and containers confine.

The worker pays for this only when it is configured: ``Runner.run`` goes
straight to the call otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from funcx_flows.errors import ConfigError

PREFIX = "funcx-task-"
TMP_VARS = ("TMPDIR", "TEMP", "TMP")
GC_SANDBOX_VAR, GC_TASK_VAR = "GC_TASK_SANDBOX_DIR", "GC_TASK_UUID"  # Globus Compute's names


@dataclass(frozen=True)
class TaskDirSpec:
    """Where task folders go (``root``: blank for the node's temporary folder), and
    whether a failed task's folder stays."""

    root: str = ""
    keep_on_failure: bool = False

    def base(self) -> str:
        return self.root or tempfile.gettempdir()

    def check(self) -> None:
        """Refuse at start what would fail at every task: a root that is not a
        folder this user can write in."""
        root = self.base()
        if not os.path.isdir(root):
            raise ConfigError(f"task_dir.root: {root} is not an existing folder")
        if not os.access(root, os.W_OK | os.X_OK):
            raise ConfigError(f"task_dir.root: {root} is not writable by this user "
                              f"(uid {os.getuid()})")


def _running(pid: int) -> str:
    return f".running-{pid}"


def remove(path: str) -> None:
    """Remove a task's folder, read-only folders the task made included."""
    def writable_again(func: object, target: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(target)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, stat.S_IRWXU)
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)

    shutil.rmtree(path, onerror=writable_again)


def _kept(folder: str, pid: int) -> str:
    """A running task's folder renamed as kept (no longer its worker's)."""
    kept = folder.removesuffix(_running(pid))
    os.rename(folder, kept)
    return kept


def after_worker(spec: TaskDirSpec, pid: int, keep: bool) -> list[str]:
    """The folder of the task a worker was running when it was killed or died (it
    could not clean up): removed, or kept (``keep``: it died on its own, and failed
    tasks' folders are kept); the paths kept."""
    kept = []
    for path in Path(spec.base()).glob(f"{PREFIX}*{_running(pid)}"):
        if keep:
            with contextlib.suppress(OSError):
                kept.append(_kept(str(path), pid))
        else:
            remove(str(path))
    return kept


class TaskFolders:
    """The worker's half: a fresh folder before each call, and the worker's own
    working directory and environment back after it."""

    def __init__(self, spec: TaskDirSpec) -> None:
        self.spec = spec
        self.home = os.getcwd()  # the worker's own, gone back to after each task
        # the worker's own environment, put back after each task (taken once: a task
        # ends with it restored, so it is the same before the next)
        self.environ = dict(os.environ)
        self._saved_tempdir: str | None = None

    def enter(self, task_id: str, attempt: int) -> str:
        """Make the task's folder and move into it; its path. Raises OSError (the
        root is gone, full, or no longer writable), having changed nothing."""
        # named after the worker while it runs: if the worker is killed, its manager
        # finds the folder by the worker's pid (after_worker)
        folder = tempfile.mkdtemp(prefix=f"{PREFIX}{task_id}-{attempt}-",
                                  suffix=_running(os.getpid()), dir=self.spec.base())
        work, tmp = os.path.join(folder, "work"), os.path.join(folder, "tmp")
        try:
            os.mkdir(work, 0o700)
            os.mkdir(tmp, 0o700)
            os.chdir(work)
        except OSError:
            remove(folder)
            raise
        self._saved_tempdir = tempfile.tempdir
        for name in TMP_VARS:
            os.environ[name] = tmp
        # Globus Compute's ShellFunction (and MPIFunction) runs in, and writes its
        # output files to, GC_TASK_SANDBOX_DIR: the task's folder, as on its endpoints
        os.environ[GC_SANDBOX_VAR] = work
        os.environ[GC_TASK_VAR] = task_id
        tempfile.tempdir = tmp
        return folder

    def leave(self, folder: str, keep: bool) -> str:
        """Back to the worker's own directory and environment; the folder removed
        unless ``keep`` (then where it is kept)."""
        tempfile.tempdir = self._saved_tempdir
        saved = self.environ
        for name in (*TMP_VARS, GC_SANDBOX_VAR, GC_TASK_VAR):
            if name in saved:
                os.environ[name] = saved[name]
            else:
                os.environ.pop(name, None)
        if dict(os.environ) != saved:  # the task set variables: they go with it
            os.environ.clear()
            os.environ.update(saved)
        os.chdir(self.home)
        if keep:
            return _kept(folder, os.getpid())
        remove(folder)
        return folder
