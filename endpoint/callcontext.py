"""What the worker sets up around one call: log capture, the block log's names,
and what a Prefect task run tells its remote body.

Records that the function logs (stdlib ``logging``, and Prefect's
``get_run_logger()``) are captured in order, each with how much of the call's
stdout was written before it, and travel back in the task's result so that the
client can replay prints and records interleaved, into the task run's log. They
also still reach the block log, whose lines then name the task and the function
(a worker inherits its manager's handlers, which would label them "manager").

A call sent by a Prefect task carries a context (``serialize.pack_call``): the
task run's and flow run's ids, names and tags, and the log level of the task
run's logger. For the call's duration the worker puts the scalars in the
``PREFECT__RUNTIME__*`` environment variables that ``prefect.runtime`` reads, and
``prefect_runtime`` supplies what those cannot carry (tags, parameters) and
``get_run_logger()``. The worker itself never imports Prefect.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
from collections.abc import Callable
from typing import Any

from funcx_flows import messages as m
from funcx_flows.endpoint import prefect_runtime

MAX_LOG_RECORDS = 1000
MAX_LOG_CHARS = 64 * 1024

# (context section, key) -> the variable prefect.runtime reads (scalars only: it
# cannot cast a list or a dict from the environment)
_RUNTIME_ENV = {
    (section, key): f"PREFECT__RUNTIME__{section.upper()}__{key.upper()}"
    for section, keys in (("task_run", ("id", "name", "task_name", "run_count")),
                          ("flow_run", ("id", "name", "flow_name")))
    for key in keys
}


class _Capture(logging.Handler):
    """Keeps the running call's log records, up to MAX_LOG_RECORDS / MAX_LOG_CHARS.
    One per worker, on the root logger from the first call on (adding and removing a
    handler per call would cost more than a short task)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: io.StringIO | None = None
        self.records: list[m.LogRecord] = []
        self.chars = 0
        self.dropped = 0

    def begin(self, level: int, out: io.StringIO) -> None:
        self.level, self.out = level, out
        self.records, self.chars, self.dropped = [], 0, 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.out is None:  # between calls: the worker's own records
            return
        try:
            text = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                text = f"{text}\n{record.exc_text}"
        except Exception:  # a bad format string: logging's own policy is to report it
            self.handleError(record)
            return
        if len(self.records) >= MAX_LOG_RECORDS or self.chars + len(text) > MAX_LOG_CHARS:
            self.dropped += 1
            return
        self.chars += len(text)
        self.records.append(m.LogRecord(created=record.created, level=record.levelno,
                                        name=record.name, message=text, at=self.out.tell()))

    def end(self) -> list[m.LogRecord]:
        out, self.out = self.out, None
        records = self.records
        if self.dropped and out is not None:
            records.append(m.LogRecord(
                created=records[-1].created if records else 0.0, level=logging.WARNING,
                name=m.REMOTE_RUN_LOGGER, at=out.tell(),
                message=f"[... {self.dropped} more log records not kept: the limit is "
                        f"{MAX_LOG_RECORDS} records, {MAX_LOG_CHARS} characters ...]"))
        return records


_CAPTURE = _Capture()
_ROOT = logging.getLogger()


class _Naming(logging.Filter):
    """Adds the running call's task id and function to the block log's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = Call.current
        record.funcx_call = (f"task {call.task_id} ({call.function_name})" if call is not None
                             else "between tasks")
        return call is None or record.levelno >= call.block_log_level


BLOCK_LOG_FORMAT = "%(asctime)s %(levelname)s worker %(process)d, %(funcx_call)s %(name)s: " \
                   "%(message)s"


def name_block_log() -> None:
    """Make the handlers a worker inherited name the task and function of each line."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(BLOCK_LOG_FORMAT))
        handler.addFilter(_Naming())


class Call:
    """The context of one call in a worker: ``with Call(...) as call:`` around it,
    then ``call.logs``."""

    current: Call | None = None

    def __init__(self, task_id: str, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], context: dict[str, Any] | None,
                 out: io.StringIO) -> None:
        self.task_id = task_id
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.context = context or {}
        self.prefect: dict[str, Any] = self.context.get("prefect") or {}
        self.out = out
        self.logs: list[m.LogRecord] = []
        self.block_log_level = logging.NOTSET
        self._saved_env: dict[str, str | None] = {}

    @property
    def function_name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)

    @property
    def tags(self) -> list[str]:
        return list((self.prefect.get("task_run") or {}).get("tags") or [])

    def parameters(self) -> dict[str, Any]:
        """The call's parameters as Prefect names them (defaults included)."""
        try:
            bound = inspect.signature(self.fn).bind(*self.args, **self.kwargs)
        except (TypeError, ValueError):
            return {}
        bound.apply_defaults()
        return dict(bound.arguments)

    def __enter__(self) -> Call:
        root = _ROOT
        if _CAPTURE not in root.handlers:
            root.addHandler(_CAPTURE)
        self.block_log_level = level = root.level  # the root's own: its effective level
        wanted = self.context.get("log_level") if self.context else None
        if isinstance(wanted, int):
            if wanted < level:
                root.setLevel(wanted)  # records below the block log's level: only captured
            level = wanted
        _CAPTURE.begin(level, self.out)
        Call.current = self
        if self.prefect:
            for (section, key), var in _RUNTIME_ENV.items():
                value = (self.prefect.get(section) or {}).get(key)
                if value is not None:
                    self._saved_env[var] = os.environ.get(var)
                    os.environ[var] = str(value)
            prefect_runtime.arm(lambda: Call.current, getattr(self.fn, "__globals__", None))
        return self

    def __exit__(self, *exc: object) -> None:
        Call.current = None
        self.logs = _CAPTURE.end()
        if _ROOT.level != self.block_log_level:
            _ROOT.setLevel(self.block_log_level)
        if self._saved_env:
            for var, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
