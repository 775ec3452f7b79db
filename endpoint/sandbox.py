"""Workers in a bubblewrap sandbox: a grantee's code cannot read the owner's secrets.

A shared endpoint runs other users' functions under its owner's OS account. Without
a sandbox such a function can read whatever the owner can: the API token in
``<home>/token``, the endpoint's CurveZMQ secret key, the owner's SSH keys. With
``sandbox: bwrap`` each worker is exec'd (not forked: a fork would carry the
manager's memory, and with it the interchange credentials) inside
`bubblewrap <https://github.com/containers/bubblewrap>`_:

    /                  the host's file system, writable as the owner's account is
    $HOME              an empty private tmpfs (HOME points to it); the Python the
                       worker runs, and the paths of ``sandbox_keep``, are bound back
    $FUNCX_FLOWS_HOME  an empty tmpfs: tokens, endpoint keys, spools, logs
    /tmp               a private tmpfs
    /proc              of a new PID namespace: the manager and the agent are not
                       there (no reading their environment or memory)

Paths of ``sandbox_hide`` are hidden too and are never bound back. The worker ends
with its manager (``--die-with-parent``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from funcx_flows.errors import ConfigError

WORKER_MODULE = "funcx_flows.endpoint.worker"


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandboxed worker must not see, and what it may use under that."""

    hide: tuple[str, ...]  # secrets: never bound back
    private_home: str  # becomes an empty tmpfs; ``keep`` paths under it are bound back
    keep: tuple[str, ...] = ()  # bound read-write (the user asked for them)
    bwrap: str = "bwrap"

    def check(self) -> None:
        """Refuse at start what would fail at every task."""
        if shutil.which(self.bwrap) is None:
            raise ConfigError(f"sandbox: bwrap needs the bubblewrap program ({self.bwrap!r} "
                              "is not on PATH; Debian: apt-get install bubblewrap)")
        for path in _python_paths():
            secret = _under_any(path, self.hide)
            if secret:
                raise ConfigError(f"sandbox: the Python the workers run ({path}) is inside "
                                  f"{secret}, which the sandbox hides")
        for path in self.keep:
            secret = _under_any(path, self.hide)
            if secret:
                raise ConfigError(f"sandbox_keep: {path} is inside {secret}, which the "
                                  "sandbox hides")

    def argv(self, command: Sequence[str]) -> list[str]:
        """bwrap's command line around ``command``."""
        args = [self.bwrap, "--bind", "/", "/", "--dev", "/dev", "--unshare-pid",
                "--proc", "/proc", "--die-with-parent", "--tmpfs", "/tmp",
                "--tmpfs", self.private_home]
        for path in sorted(self.hide, key=len):
            if Path(path).exists():
                args += ["--tmpfs", path]
        kept: list[str] = []
        for path in _python_paths():
            if _under_any(path, (self.private_home, "/tmp")) and not _under_any(path, kept):
                kept.append(path)
        for path in sorted(kept, key=len):
            args += ["--ro-bind", path, path]
        for path in self.keep:
            if Path(path).exists():
                args += ["--bind", path, path]
        args += ["--setenv", "HOME", self.private_home, "--chdir", self.private_home, "--",
                 *command]
        return args


def default_spec(hide: Iterable[str], keep: Iterable[str], funcx_home: Path) -> SandboxSpec:
    """The owner's home becomes private; the service home (tokens, keys) and ``hide``
    are hidden."""
    home = os.path.realpath(Path.home())
    secrets = {os.path.realpath(funcx_home), *(os.path.realpath(p) for p in hide)}
    return SandboxSpec(hide=tuple(sorted(secrets)), private_home=home,
                       keep=tuple(os.path.realpath(p) for p in keep))


def _python_paths() -> list[str]:
    """Where this Python and the packages it imports live: bound back read-only."""
    import funcx_flows
    import funcx_flows.endpoint

    # (``python -m`` puts the folder it was started in first on the path: where the
    # manager happens to run, not where anything is imported from)
    started_in = sys.path[1:] if sys.path and sys.path[0] in ("", os.getcwd()) else sys.path
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix,
             *(p for p in started_in if p and os.path.isdir(p)),
             str(Path(funcx_flows.__file__).parent),
             str(Path(funcx_flows.endpoint.__file__).parent)}
    return sorted({os.path.realpath(p) for p in found})


def _under_any(path: str, roots: Iterable[str]) -> str:
    """The first of ``roots`` that ``path`` is in (or is), else ''."""
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return ""


@dataclass(eq=False)
class ExecWorker:
    """A worker process started with exec, inside the sandbox. It answers the manager
    as a forked ``multiprocessing.Process`` does (sentinel, is_alive, kill, join,
    exitcode), the sentinel being a pidfd."""

    popen: subprocess.Popen[bytes]
    sentinel: int = field(init=False)

    def __post_init__(self) -> None:
        self.sentinel = os.pidfd_open(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        """As multiprocessing says it: -N for a death by signal N (bwrap exits with
        128 + N when the worker it runs is killed)."""
        code = self.popen.poll()
        return -(code - 128) if code is not None and 128 < code < 160 else code

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()  # bwrap: the worker follows it (--die-with-parent)

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


def start_sandboxed_worker(spec: SandboxSpec, worker_args: list[str]
                           ) -> tuple[ExecWorker, Connection]:
    """A worker exec'd in the sandbox, and the manager's end of its pipe
    (``worker_args``: ManagerOptions.worker_args)."""
    ours, theirs = socket.socketpair()
    try:
        command = [sys.executable, "-m", WORKER_MODULE, "--fd", str(theirs.fileno()),
                   *worker_args]
        popen = subprocess.Popen(spec.argv(command), pass_fds=(theirs.fileno(),),
                                 stdin=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ExecWorker(popen), Connection(ours.detach())
