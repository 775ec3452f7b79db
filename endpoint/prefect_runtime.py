"""Prefect's run-time API in a remote body, without Prefect's engine or API.

A Prefect task body that runs here has no ``TaskRunContext``: ``prefect.runtime``
would answer empty values and ``get_run_logger()`` would raise
``MissingContextError``. The worker sets the ``PREFECT__RUNTIME__*`` variables for
the scalars (``callcontext``); this module adapts the rest, in the worker process
only and only while a call sent by a Prefect task runs (``current()``):

- ``prefect.runtime.task_run.tags`` and ``.parameters`` (Prefect cannot read a
  list or a dict from the environment) answer the call's own;
- ``get_run_logger()`` answers a logger whose records the worker captures and
  sends back with the result (the client writes them into the task run's log),
  instead of one whose handler would need the Prefect API.

The worker never imports Prefect (its start must stay light, and a compute node
may not have it). The modules are adapted when the user's code has loaded them:
at once if they are loaded, else by an import hook as they load. A real Prefect
run in the worker process (a flow run by the body itself) is left alone.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from funcx_flows import messages as m

_RUNTIME = "prefect.runtime.task_run"
_LOGGERS = "prefect.logging.loggers"
_TARGETS = (_RUNTIME, _LOGGERS)
_adapted: set[str] = set()
_current: Callable[[], Any] = lambda: None  # noqa: E731  (set by arm)


def _call() -> Any:
    """The running call if it came from a Prefect task and no real run is active."""
    call = _current()
    if call is None or not call.prefect:
        return None
    context = sys.modules.get("prefect.context")
    if context is not None and (context.TaskRunContext.get() is not None
                                or context.FlowRunContext.get() is not None):
        return None
    return call


def _adapt_runtime(module: ModuleType) -> None:
    fields = getattr(module, "FIELDS", None)
    if not isinstance(fields, dict):
        return
    real_tags, real_parameters = fields.get("tags"), fields.get("parameters")

    def tags() -> Any:
        call = _call()
        return call.tags if call is not None or real_tags is None else real_tags()

    def parameters() -> Any:
        call = _call()
        return (call.parameters() if call is not None or real_parameters is None
                else real_parameters())

    fields["tags"], fields["parameters"] = tags, parameters


def _adapt_loggers(module: ModuleType, also: Sequence[dict[str, Any]] = ()) -> None:
    real = getattr(module, "get_run_logger", None)
    if real is None:
        return

    @functools.wraps(real)
    def get_run_logger(context: Any = None, **kwargs: Any) -> Any:
        if context is None and _call() is not None:
            return logging.LoggerAdapter(logging.getLogger(m.REMOTE_RUN_LOGGER), kwargs)
        return real(context, **kwargs)

    # every namespace that took the function by name (prefect, prefect.logging...)
    namespaces = [vars(mod) for name, mod in list(sys.modules.items())
                  if name.split(".")[0] == "prefect" and mod is not None]
    for ns in [*namespaces, *also]:
        if ns.get("get_run_logger") is real:
            ns["get_run_logger"] = get_run_logger


def _adapt(name: str, module: ModuleType) -> None:
    _adapted.add(name)
    (_adapt_runtime if name == _RUNTIME else _adapt_loggers)(module)


class _AdaptAfterExec(importlib.abc.Loader):
    """A module's own loader, then the adaptation."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader, self._name = loader, name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _adapt(self._name, module)

    def __getattr__(self, attr: str) -> Any:  # get_source, get_resource_reader...
        return getattr(self._loader, attr)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _TARGETS or fullname in _adapted:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _AdaptAfterExec(spec.loader, fullname)
        return spec


_finder = _Finder()


def arm(current: Callable[[], Any], fn_globals: dict[str, Any] | None = None) -> None:
    """Adapt what is loaded, and what loads later; ``current`` answers the running
    call. ``fn_globals``: the function's own namespace, which may hold Prefect's
    ``get_run_logger`` from before the adaptation."""
    global _current
    _current = current
    for name in _TARGETS:
        module = sys.modules.get(name)
        if name not in _adapted and module is not None:
            _adapt(name, module)
    adapted = getattr(sys.modules.get(_LOGGERS), "get_run_logger", None)
    real = getattr(adapted, "__wrapped__", None)
    if fn_globals is not None and real is not None and fn_globals.get("get_run_logger") is real:
        fn_globals["get_run_logger"] = adapted
    if len(_adapted) < len(_TARGETS) and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    elif len(_adapted) == len(_TARGETS) and _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
