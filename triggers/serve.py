"""Run triggers: ``serve(*triggers)`` from Python, or from a YAML file via the CLI."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from funcx_flows.home import home_dir
from funcx_flows.retry import poll_until
from funcx_flows.triggers.config import FileTriggerConfig, GlobusTriggerConfig, TriggersFile
from funcx_flows.triggers.state import StateStore

log = logging.getLogger(__name__)
TICK_S = 0.1


class Trigger(Protocol):
    name: str
    problems: list[str]

    def start(self, wake: threading.Event | None = None) -> None: ...

    def tick(self) -> None: ...

    def stop(self, wait: bool = True) -> None: ...


def default_state_path(configured: str = "") -> Path:
    return Path(configured).expanduser() if configured else home_dir() / "triggers" / "state.db"


def build(config: TriggersFile, store: StateStore,
          transfer_client: Callable[[], Any] | None = None) -> list[Trigger]:
    triggers: list[Trigger] = []
    for t in config.triggers:
        if isinstance(t, FileTriggerConfig):
            from funcx_flows.triggers.filewatch import FileTrigger

            triggers.append(FileTrigger(t, store))
        elif isinstance(t, GlobusTriggerConfig):
            from funcx_flows.triggers.globus import GlobusTransferTrigger
            from funcx_flows.triggers.globus_auth import transfer_client as from_auth

            client = transfer_client() if transfer_client is not None else from_auth(
                t.auth, t.transfer_url or None)
            triggers.append(GlobusTransferTrigger(t, store, client))
    return triggers


def serve(*triggers: Trigger, stop: threading.Event | None = None,
          handle_signals: bool = False, started_event: threading.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM with ``handle_signals``).

    The loop sleeps until something happens (a file event, a slot freed) or
    ``TICK_S`` passes (settle times, batch windows and retries are due by clock).
    """
    stop = stop or threading.Event()
    wake = threading.Event()
    before: dict[signal.Signals, Any] = {}
    if handle_signals:
        def _stop(*_: Any) -> None:
            stop.set()
            wake.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            before[sig] = signal.signal(sig, _stop)
    started: list[Trigger] = []
    try:
        for t in triggers:
            t.start(wake)
            started.append(t)
            log.info("trigger %s started", t.name)
        if started_event is not None:
            started_event.set()
        while not stop.is_set():
            for t in triggers:
                try:
                    t.tick()
                except Exception:  # one trigger's trouble must not stop the others
                    log.exception("trigger %s: error in its loop", t.name)
            wake.wait(TICK_S)
            wake.clear()
    finally:
        for t in started:
            t.stop(wait=True)
        for signum, handler in before.items():  # the caller's own (a later Ctrl-C is theirs)
            signal.signal(signum, handler)
        log.info("triggers stopped")


class Running:
    """Triggers served on a background thread (for scripts, the demo and tests).

    Entering returns once every trigger has started, and raises what stopped one
    from starting (a bad folder, another process serving it)."""

    def __init__(self, *triggers: Trigger) -> None:
        self.triggers = triggers
        self.stop_event = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True, name="funcx-triggers")

    def _serve(self) -> None:
        try:
            serve(*self.triggers, stop=self.stop_event, started_event=self._started)
        except BaseException as exc:  # handed to the thread that entered
            self._error = exc
            self._started.set()

    def __enter__(self) -> Running:
        self.thread.start()
        self._started.wait()
        if self._error is not None:
            self.thread.join()
            raise self._error
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(60)


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    return bool(poll_until(predicate, timeout))
