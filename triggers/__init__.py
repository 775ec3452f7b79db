"""Triggers that start pipelines: file events near instruments, Globus transfers landing.

    from funcx_flows.triggers import files, serve

    watch = files("detector", ["/data/detector"], flow=beamline, patterns=["*.h5"],
                  batch_size=100, batch_window_s=5)
    serve(watch)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from funcx_flows.triggers.config import FileTriggerConfig, TargetConfig
from funcx_flows.triggers.serve import Running, serve
from funcx_flows.triggers.state import StateStore


def files(name: str, paths: list[str], *, flow: Callable[..., Any] | str,
          state: StateStore | None = None, parameters: dict[str, Any] | None = None,
          **options: Any) -> Any:
    """A file trigger that calls ``flow`` (a callable, or 'module:flow') in-process.

    ``options`` are the keys of the YAML form (patterns, ignore_patterns, recursive,
    mode, settle_s, batch_size, batch_window_s, max_in_flight, polling...)."""
    from funcx_flows.triggers.filewatch import FileTrigger
    from funcx_flows.triggers.serve import default_state_path

    ref = flow if isinstance(flow, str) else f"{getattr(flow, '__module__', '')}:callable"
    config = FileTriggerConfig(name=name, paths=paths, target=TargetConfig(
        kind="flow", flow=ref, parameters=parameters or {}), **options)
    store = state or StateStore(default_state_path())
    return FileTrigger(config, store, call=None if isinstance(flow, str) else flow)


__all__ = ["Running", "StateStore", "files", "serve"]
