"""Shell commands as functions: ``ShellFunction(cmd)`` runs a command template on a worker.

A ``ShellFunction`` is an ordinary callable, so everything that ships a Python
function ships it (``Executor.submit``, ``Client.run``, ``remote_task``,
``remote_map``); the call runs on the worker::

    echo = ShellFunction("echo {greeting}, {0}", walltime=60)
    executor.submit(echo, "world", greeting="hello").result()
    ShellResult(cmd='echo hello, world', returncode=0, stdout='hello, world\\n', ...)

What a call does, and why:

- The template is formatted with the call's arguments (``str.format``: positional
  ones fill ``{0}``, ``{1}``, keyword ones ``{name}``), as they are: quote a value
  that may hold spaces or shell characters yourself (``shlex.quote``). A field the
  call does not give is a ``CommandError`` naming it, before anything runs.
- The command runs under ``/bin/sh`` in a new, empty working folder (under
  ``$TMPDIR``), removed when it ends, so that no call sees another's leftovers.
  Its stdout and stderr go to files beside that folder, not pipes: a command that
  prints a lot never blocks on a full pipe, and only the last ``snippet_lines``
  lines of each come back.
- It runs in a process group of its own. At its walltime the whole group is
  killed (SIGKILL: a process that ignores SIGTERM cannot outlive it) and the call
  raises ``CommandTimedOut``. What the command left running in the background is
  killed when it ends. If the worker itself dies, the shell dies with it.
- A non-zero return code is a result (``ShellResult.returncode``), as for
  ``subprocess.run``; ``check=True`` makes it a ``CommandFailed`` instead.

This module runs on workers: it imports nothing beyond the standard library and
the error tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import string
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funcx_flows.errors import CommandError, CommandFailed, CommandTimedOut

_TAIL_BLOCK = 64 * 1024
WORKDIR_PREFIX = "funcx-shell-"


@dataclass(frozen=True)
class ShellResult:
    """What a shell (or MPI) command did: its return code and the ends of its output."""

    cmd: str
    returncode: int
    stdout: str  # the last ``snippet_lines`` lines
    stderr: str


class ShellFunction:
    """A command template run by ``/bin/sh`` on a worker (see the module docstring).

    ``walltime``: seconds before the command's process group is killed and the call
    raises ``CommandTimedOut`` (None: no limit). ``snippet_lines``: how many of the
    last lines of stdout and stderr come back. ``check``: raise ``CommandFailed`` on a
    non-zero return code instead of returning it. ``name``: how the function is
    registered (default: the class name)."""

    def __init__(self, cmd: str, walltime: float | None = None, snippet_lines: int = 1000,
                 *, check: bool = False, name: str | None = None) -> None:
        if not isinstance(cmd, str) or not cmd.strip():
            raise CommandError("a ShellFunction needs a command (a non-empty string)")
        if walltime is not None and walltime <= 0:
            raise CommandError(f"walltime must be positive seconds or None, not {walltime!r}")
        if snippet_lines < 0:
            raise CommandError(f"snippet_lines must be 0 or more, not {snippet_lines!r}")
        try:
            _fields(cmd)
        except ValueError as exc:
            raise CommandError(f"the command template {cmd!r} is not valid: {exc}") from exc
        self.cmd = cmd
        self.walltime = walltime
        self.snippet_lines = snippet_lines
        self.check = check
        self.__name__ = self.__qualname__ = name or type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cmd!r}, walltime={self.walltime!r})"

    def format(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The command this call runs: the template filled with the call's arguments."""
        try:
            return self.cmd.format(*args, **kwargs)
        except (KeyError, IndexError) as exc:
            given = ", ".join([*map(str, range(len(args))), *kwargs]) or "none"
            raise CommandError(f"the command template {self.cmd!r} needs {{{exc.args[0]}}}, "
                               f"which the call did not give (given: {given})") from exc

    def __call__(self, *args: Any, **kwargs: Any) -> ShellResult:
        return self.run(self.format(args, kwargs))

    def run(self, command: str) -> ShellResult:
        """Run ``command`` (already formatted) as this function's options say."""
        result = run_command(command, self.walltime, self.snippet_lines)
        if self.check and result.returncode != 0:
            raise CommandFailed(f"the command exited with {result.returncode}: {command}\n"
                                f"{_last_lines(result.stderr, 20)}", result=result)
        return result


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def run_command(command: str, walltime: float | None, snippet_lines: int,
                env: Mapping[str, str] | None = None) -> ShellResult:
    """Run ``command`` under /bin/sh in a fresh working folder (removed after), its
    process group killed at ``walltime`` or when it ends; see the module docstring."""
    base = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    try:
        work = base / "work"
        work.mkdir()
        out_path, err_path = base / "stdout", base / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                command, shell=True, cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, start_new_session=True, preexec_fn=_die_with_parent,
                env=None if env is None else {**os.environ, **env})
        try:
            returncode = proc.wait(walltime)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            tail = _last_lines(_tail(err_path, 20) or _tail(out_path, 20), 20)
            raise CommandTimedOut(
                f"the command ran past its walltime of {walltime:g} s; its process group "
                f"was killed: {command}" + (f"\nlast output:\n{tail}" if tail else "")
            ) from None
        except BaseException:  # interrupted (the worker is stopping): leave nothing behind
            _kill_group(proc.pid)
            proc.wait()
            raise
        _kill_group(proc.pid)  # what it left running in the background
        return ShellResult(cmd=command, returncode=returncode,
                           stdout=_tail(out_path, snippet_lines),
                           stderr=_tail(err_path, snippet_lines))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child, before exec: die when the worker does (a cancel kills it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a file, read from its end (the output may be large)."""
    if lines <= 0:
        return ""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode(errors="replace")
    return _last_lines(text, lines)


def _last_lines(text: str, lines: int) -> str:
    kept = text.splitlines(keepends=True)
    return "".join(kept[-lines:]) if lines > 0 else ""
