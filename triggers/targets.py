"""What a trigger starts, and the one dispatcher that starts it (with retries).

A target is a Prefect flow (or any callable) called in-process, a Prefect
deployment started through the API with an idempotency key derived from the
run (a retry never starts a second flow run), or a Prefect event.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import importlib.util
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from funcx_flows.errors import ConfigError
from funcx_flows.retry import RetryPolicy
from funcx_flows.triggers import recovery
from funcx_flows.triggers.config import TargetConfig
from funcx_flows.triggers.state import RUNNING, Run, StateStore

log = logging.getLogger(__name__)
_WHOLE = re.compile(r"^\{(\w+)\}$")


def render(template: Any, context: dict[str, Any]) -> Any:
    """Fill parameter templates from an event's context (recursively)."""
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole and whole.group(1) in context:
            return context[whole.group(1)]
        try:
            return template.format(**context)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"parameter template {template!r}: unknown field {exc}") from None
    if isinstance(template, dict):
        return {k: render(v, context) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, context) for v in template]
    return template


def load_callable(ref: str) -> Callable[..., Any]:
    """``package.module:attr`` or ``path/to/file.py:attr``."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ConfigError(f"flow {ref!r}: expected 'module:flow' or 'file.py:flow'")
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref).expanduser().resolve()
            name = f"funcx_trigger_target_{abs(hash(str(path)))}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"flow {ref!r}: cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_ref)
    except (ImportError, FileNotFoundError, SyntaxError) as exc:
        raise ConfigError(f"flow {ref!r}: cannot import: {exc}") from None
    try:
        fn: Callable[..., Any] = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"flow {ref!r}: {module_ref} has no {attr!r}") from None
    return fn


class Starter:
    """Starts one trigger's queued runs, at most ``max_in_flight`` at a time.

    Each slot is a worker thread that claims due runs from the durable queue
    until none is left, so a burst drains at the speed of the target rather
    than of the serve loop; ``wake`` is set whenever a slot frees up.
    """

    def __init__(self, trigger: str, target: TargetConfig, store: StateStore, max_in_flight: int,
                 call: Callable[..., Any] | None = None,
                 default_parameters: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 wake: threading.Event | None = None,
                 api_retry: RetryPolicy | None = None) -> None:
        self.trigger = trigger
        self.target = target
        self.store = store
        self.max_in_flight = max_in_flight
        self.wake = wake or threading.Event()
        self._call = call
        self._defaults = default_parameters or (lambda ctx: {})
        self._pool = cf.ThreadPoolExecutor(max_in_flight, thread_name_prefix=f"trigger-{trigger}")
        self._slots: list[cf.Future[None]] = []
        self._closing = threading.Event()
        self._policy = RetryPolicy(initial=max(target.retry_initial_s, 0.001),
                                   max_delay=target.retry_max_s)
        self._api_retry = api_retry  # None: funcx_flows.prefect.api_retry.API_RETRY
        self._marked: Any = None  # the target as a Prefect flow with marks; False: not one
        self._marking = threading.Lock()

    @property
    def idempotent(self) -> bool:
        """Whether starting a run twice still makes one pipeline run."""
        if self.target.rerun_interrupted is not None:
            return bool(self.target.rerun_interrupted)
        return bool(self.target.kind != "flow")

    def recover(self) -> int:
        """Deal with runs a previous process left 'running' (see ``state``); for a
        Prefect flow, find out which of them had in fact finished (``recovery``)."""
        cut_off = [r.run_id for r in self.store.runs(self.trigger, states=(RUNNING,),
                                                     limit=1_000_000)]
        n = int(self.store.recover(self.trigger, rerun=self.idempotent))
        if not n:
            return n
        if self.idempotent:
            log.warning("trigger %s: %d run(s) were in progress when it last stopped; "
                        "starting them again", self.trigger, n)
        elif self._loadable_prefect_flow() is not None:
            verdicts = Counter(recovery.check(self.store, cut_off, self._api_retry).values())
            log.warning("trigger %s: %d run(s) were cut off when it last stopped: %d had "
                        "finished (marked done), %d never finished (safe to replay: "
                        "`funcx-flows trigger replay --interrupted`), %d unknown", self.trigger,
                        n, verdicts[recovery.FINISHED],
                        sum(verdicts[v] for v in recovery.SAFE), verdicts[recovery.UNKNOWN])
        else:
            log.warning("trigger %s: %d run(s) were in progress when it last stopped; "
                        "marked interrupted", self.trigger, n)
        return n

    def _callable(self) -> Callable[..., Any]:
        if self._call is None:
            self._call = load_callable(self.target.flow)
        return self._call

    def _prefect_flow(self) -> Any | None:
        """The target as a Prefect flow that writes its marks (``recovery``), or None
        when it is no Prefect flow (a plain callable, a deployment, an event)."""
        with self._marking:  # slots ask at once; none may start the unmarked flow
            if self._marked is None:
                marked: Any = False
                if self.target.kind == "flow" and "prefect" in sys.modules:
                    from prefect import Flow

                    target = self._callable()
                    if isinstance(target, Flow):
                        marked = recovery.with_marks(target, self.store)
                self._marked = marked
        return self._marked or None

    def _loadable_prefect_flow(self) -> Any | None:
        try:
            return self._prefect_flow()
        except Exception:  # not loadable: each attempt reports why
            return None

    def parameters(self, run: Run) -> dict[str, Any]:
        context = {**run.context, "run_id": run.run_id, "batch_id": run.run_id}
        if self.target.parameters:
            params: dict[str, Any] = render(self.target.parameters, context)
            return params
        return self._defaults(context)

    def start(self, run: Run) -> Any:
        """Start the target for one run (blocking for in-process flows)."""
        params = self.parameters(run)
        t = self.target
        if t.kind == "flow":
            marked = self._prefect_flow()
            if marked is None:
                return self._callable()(**params)
            from prefect import tags

            with tags(recovery.run_tag(run.run_id)):
                return marked(**params)
        if t.kind == "deployment":
            from prefect.deployments import run_deployment

            flow_run = run_deployment(t.deployment, parameters=params, timeout=0,
                                      idempotency_key=f"funcx-flows-trigger-{run.run_id}")
            return f"flow run {getattr(flow_run, 'id', flow_run)}"
        from prefect.events import emit_event

        emit_event(event=t.event, resource={"prefect.resource.id":
                                            f"funcx-flows.trigger.{self.trigger}"},
                   payload=params, id=uuid.uuid5(uuid.NAMESPACE_URL, run.run_id))
        return f"event {t.event}"

    def pump(self) -> None:
        """Fill free slots with workers while runs are due (called from the serve loop)."""
        self._slots = [f for f in self._slots if not f.done()]
        while len(self._slots) < self.max_in_flight and not self._closing.is_set():
            run = self.store.claim(self.trigger)
            if run is None:
                return
            self._slots.append(self._pool.submit(self._work, run))

    def _work(self, run: Run | None) -> None:
        try:
            with self._flow_runs():
                while run is not None:
                    if self._closing.is_set():  # claimed but never started: back in the queue
                        self.store.release(run.run_id)
                        return
                    self._attempt(run)
                    run = self.store.claim(self.trigger)
        finally:
            self.wake.set()

    @contextlib.contextmanager
    def _flow_runs(self) -> Iterator[None]:
        """For the in-process Prefect flow runs a slot starts in a row: one API client
        that retries transient answers, and no heartbeat wait (``prefect.flowruns``)."""
        if self._loadable_prefect_flow() is None:
            yield
            return
        from funcx_flows.prefect.flowruns import in_process_runs

        with in_process_runs(self._api_retry, heartbeats=self.target.prefect_heartbeats):
            yield

    def _attempt(self, run: Run) -> None:
        attempt = run.attempts
        try:
            result = self.start(run)
        except Exception as exc:  # any failure of the user's target is recorded, never lost
            err = f"{type(exc).__name__}: {exc}"
            if attempt >= self.target.max_attempts:
                log.error("trigger %s: run %s failed for good after %d attempts: %s",
                          self.trigger, run.run_id, attempt, err)
                self.store.mark_failed(run.run_id, err + "\n" + traceback.format_exc(limit=5))
                self._forget_marks(run)
            else:
                delay = self._policy.delay(attempt - 1)
                log.warning("trigger %s: run %s failed (attempt %d/%d): %s; retrying in %.1fs",
                            self.trigger, run.run_id, attempt, self.target.max_attempts, err,
                            delay)
                self.store.mark_retry(run.run_id, err, time.time() + delay)
            return
        self.store.mark_done(run.run_id, repr(result)[:2000])
        self._forget_marks(run)

    def _forget_marks(self, run: Run) -> None:
        """A run that ended in this process needs no marks to judge it later."""
        if self._marked:
            self.store.forget_flow_run(run.run_id)

    @property
    def busy(self) -> int:
        return sum(1 for f in self._slots if not f.done())

    def close(self, wait: bool = True) -> None:
        """Stop claiming; with ``wait``, let runs in progress finish."""
        self._closing.set()
        self._pool.shutdown(wait=wait)
