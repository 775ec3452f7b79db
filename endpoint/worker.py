"""A worker: a forked child of a manager that runs one task at a time.

It reads encoded ``TaskSpec`` frames from a pipe and writes encoded
``TaskResult`` frames back. It unpickles the function and the arguments (the
only place besides the client that ever does), captures what the function
prints and logs (``callcontext``), and turns every failure into an error that
names its cause. An exception the function raised also travels pickled, so that
the client can raise the original type.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import inspect
import io
import os
import select
import signal
import stat
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from funcx_flows import messages as m
from funcx_flows import serialize
from funcx_flows.endpoint.callcontext import Call, name_block_log
from funcx_flows.endpoint.taskdir import TaskDirSpec, TaskFolders
from funcx_flows.errors import (
    FuncxFlowsError,
    ResultTooLarge,
    SerializationError,
    SystemFailure,
)
from funcx_flows.home import drop_secrets_from_environ

MAX_STDOUT = 64 * 1024
MAX_EXCEPTION_BYTES = 256 * 1024
_FUNCTION_CACHE_SIZE = 256


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _remote_traceback(exc: BaseException) -> str:
    """The traceback from the user's function down, without this module's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _failure(spec: m.TaskSpec, code: str, message: str, started: float, out: str = "",
             logs: list[m.LogRecord] | None = None) -> m.TaskResult:
    return m.TaskResult(
        task_id=spec.task_id, ok=False, stdout=out, logs=logs or [], started_at=started,
        finished_at=time.time(), attempts=spec.attempt + 1,
        error=m.ErrorInfo(code=code, message=message))


def _raised(exc: BaseException) -> m.ErrorInfo:
    """What the function raised: described, and pickled when it can be (a class of
    the user's own code goes by value, as the function came)."""
    tb = _remote_traceback(exc)
    try:
        data = serialize.pack(exc)
    except SerializationError as err:
        data, tb = b"", f"{tb}(The exception object was not sent: {err.message}.)\n"
    if len(data) > MAX_EXCEPTION_BYTES:
        tb = (f"{tb}(The exception object was not sent: its pickle is {len(data)} bytes, "
              f"over the limit of {MAX_EXCEPTION_BYTES}.)\n")
        data = b""
    return m.ErrorInfo(code="remote_exception", message=f"{type(exc).__name__}: {exc}",
                       remote_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                       remote_traceback=tb, exception=data)


class Runner:
    """Runs task specs; keeps deserialized functions by id."""

    def __init__(self, max_result_bytes: int, task_dir: TaskDirSpec | None = None) -> None:
        self.max_result_bytes = max_result_bytes
        self._functions: dict[str, Any] = {}
        self.folders = None if task_dir is None else TaskFolders(task_dir)

    def _function(self, spec: m.TaskSpec) -> Any:
        fn = self._functions.get(spec.function_id)
        if fn is None:
            fn = serialize.unpack(spec.function, what="function", strict_python=True)
            if len(self._functions) >= _FUNCTION_CACHE_SIZE:
                self._functions.pop(next(iter(self._functions)))
            self._functions[spec.function_id] = fn
        return fn

    def run(self, spec: m.TaskSpec) -> m.TaskResult:
        started = time.time()
        try:
            fn = self._function(spec)
            args, kwargs, context = serialize.unpack_call(spec.payload)
        except FuncxFlowsError as exc:
            return _failure(spec, exc.code, exc.message, started)
        buf = io.StringIO()
        call = Call(spec.task_id, fn, args, kwargs, context, buf)
        try:
            with call, contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
                    _placement(spec.resources):
                value = fn(*args, **kwargs)
                if inspect.iscoroutine(value):  # an async def function
                    value = asyncio.run(value)
        except BaseException as exc:
            return m.TaskResult(task_id=spec.task_id, ok=False, error=_raised(exc),
                                stdout=_clip(buf.getvalue()), logs=call.logs,
                                started_at=started, finished_at=time.time(),
                                attempts=spec.attempt + 1)
        out, logs = _clip(buf.getvalue()), call.logs
        try:
            data = serialize.pack(value)
        except SerializationError as exc:
            return _failure(spec, exc.code, f"the result cannot be serialized: {exc.message}",
                            started, out, logs)
        if len(data) > self.max_result_bytes:
            return _failure(spec, ResultTooLarge.code,
                            f"the result is {len(data)} bytes; the limit is "
                            f"{self.max_result_bytes}", started, out, logs)
        return m.TaskResult(task_id=spec.task_id, ok=True, data=data, stdout=out, logs=logs,
                            started_at=started, finished_at=time.time(),
                            attempts=spec.attempt + 1)

    def run_in_folder(self, spec: m.TaskSpec) -> m.TaskResult:
        """``run`` in a fresh folder of the task's own (taskdir.py): the worker's loop
        calls this one instead of ``run`` when the endpoint has ``task_dir:``."""
        folders = self.folders
        assert folders is not None
        try:
            folder = folders.enter(spec.task_id, spec.attempt)
        except OSError as exc:
            return _failure(spec, SystemFailure.code, "task_dir: cannot make the task's folder "
                            f"under {folders.spec.base()}: {exc}", time.time())
        result = self.run(spec)
        keep = not result.ok and folders.spec.keep_on_failure
        try:
            folder = folders.leave(folder, keep)
        except OSError as exc:  # the root is gone: the result stands
            folder = f"{folder} (not renamed: {exc})"
        if keep and result.error is not None:
            note = f"(task_dir: the task's folder is kept at {folder})"
            result.error.message = f"{result.error.message} {note}"
            if result.error.remote_traceback:
                result.error.remote_traceback += note + "\n"
        return result


def _placement(resources: m.ResourceSpec | None) -> contextlib.AbstractContextManager[None]:
    """An MPI task's nodes, held around its call (mpi.py, imported only for one)."""
    if resources is None or (resources.num_nodes is None and resources.num_ranks is None
                             and resources.ranks_per_node is None):
        return contextlib.nullcontext()
    from funcx_flows.endpoint.mpi import task_placement

    held: contextlib.AbstractContextManager[None] = task_placement(resources)
    return held


def _clip(text: str) -> str:
    if len(text) <= MAX_STDOUT:
        return text
    return text[:MAX_STDOUT // 2] + "\n[... output truncated ...]\n" + text[-MAX_STDOUT // 2:]


def _close_inherited_sockets(keep: int) -> None:
    """Sockets the parent had open at the fork (its ZeroMQ connections, when the
    parent is the endpoint itself) would stay open for as long as this worker
    lives: a peer would not see them close. Pipes (multiprocessing's sentinels)
    and files are left alone."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: nothing to go by
        return
    for fd in fds:
        if fd <= 2 or fd == keep:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:  # the listing's own descriptor, already gone
            continue


def worker_main(conn: Connection | StdioPipe, max_result_bytes: int,
                environ: dict[str, str] | None = None,
                task_dir: TaskDirSpec | None = None) -> None:
    """Entry point of a worker process (forked, or exec'd by ``main`` in a sandbox).
    ``environ``: what the manager adds to the worker's environment (an MPI block's
    node pool: mpi.py); ``task_dir``: each task in a fresh folder (taskdir.py)."""
    _die_with_parent()
    if environ:
        os.environ.update(environ)
    drop_secrets_from_environ()  # the agent dropped them already; a worker must not have them
    _close_inherited_sockets(conn.fileno())
    sys.setswitchinterval(0.005)  # Python's default, for the user's threads (the parent's is short)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    name_block_log()
    pipe = _Pipe(conn)
    runner = Runner(max_result_bytes, task_dir)
    run = runner.run if task_dir is None else runner.run_in_folder
    while True:
        spec = pipe.next_task()
        if spec is None:
            os._exit(0)
        result = (m.cancelled_result(spec, time.time()) if spec.task_id in pipe.cancelled
                  else run(spec))
        conn.send_bytes(m.encode(m.Results(results=[result])))


class _Pipe:
    """The worker's end of its pipe: tasks in order, and the cancels that came
    after a task that waits in the pipe (the manager cannot take it back). Before a
    task runs, everything already in the pipe is read, so that a cancel sent while
    the task waited is seen first."""

    def __init__(self, conn: Connection | StdioPipe) -> None:
        self.conn = conn
        # (Connection.poll builds a selector per call: ~10 us a task where this is ~1)
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)
        self.decoder = m.Decoder(m.WORKER_INPUT)
        self.waiting: collections.deque[m.TaskSpec] = collections.deque()
        self.cancelled: set[str] = set()

    def _read(self) -> bool:
        try:
            msg = self.decoder.decode(self.conn.recv_bytes())
        except (EOFError, OSError):
            return False
        if isinstance(msg, m.Tasks):
            self.waiting.extend(msg.tasks)
        elif isinstance(msg, m.Cancel):
            self.cancelled.update(msg.task_ids)
        return True

    def next_task(self) -> m.TaskSpec | None:
        """The next task to run; None once the manager is gone."""
        while not self.waiting:
            if not self._read():
                return None
        while self._poller.poll(0):
            if not self._read():
                break
        if self.cancelled:  # a cancel for a task no longer waiting came too late: forget it
            self.cancelled.intersection_update(t.task_id for t in self.waiting)
        return self.waiting.popleft()


class StdioPipe:
    """The pipe to the manager as this process's standard input and output (a
    docker container's: container.py). Both move to descriptors of their own at
    once: 0 then reads /dev/null and 1 writes to 2, so that what a task or its
    child processes print or read cannot reach the pipe."""

    def __init__(self) -> None:
        reading, writing = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
        self._in = Connection(reading, writable=False)
        self._out = Connection(writing, readable=False)

    def fileno(self) -> int:
        return self._in.fileno()

    def recv_bytes(self) -> bytes:
        return self._in.recv_bytes()

    def send_bytes(self, frame: bytes) -> None:
        self._out.send_bytes(frame)


def main(argv: list[str] | None = None) -> None:
    """``python -m funcx_flows.endpoint.worker --fd N``: a worker exec'd in a sandbox
    or a container (sandbox.py, container.py), its pipe to the manager inherited as
    descriptor N; ``--stdio``: as its standard input and output (docker)."""
    p = argparse.ArgumentParser(prog=f"python -m {__name__}")
    pipe = p.add_mutually_exclusive_group(required=True)
    pipe.add_argument("--fd", type=int)
    pipe.add_argument("--stdio", action="store_true")
    p.add_argument("--max-result-bytes", type=int, required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--task-dir", default=None, help="a TaskDirSpec as JSON (taskdir.py)")
    a = p.parse_args(argv)
    task_dir = None if a.task_dir is None else msgspec.json.decode(a.task_dir, type=TaskDirSpec)
    worker_main(StdioPipe() if a.stdio else Connection(a.fd), a.max_result_bytes,
                task_dir=task_dir)


if __name__ == "__main__":
    main()
