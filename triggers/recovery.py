"""In-process Prefect flow runs cut off by a crash: had they finished?

A run's flow is started under a tag naming the run (``funcx-flows-run:<run id>``)
and with two hooks that write marks into the state database as Prefect records
the flow run's states: *began* (Running) and *finished* (Completed, written before
any hook of the user's). On restart, each run found cut off is judged::

    finished mark ---------------------------------------------> finished
    no mark, Prefect API: a top-level flow run with the tag ...
         ... Completed ---------------------------------------> finished
         ... not Completed (marked Crashed if still Running) --> cut off
         ... none --------------------------------------------> not started
    no API: began mark -> cut off; no mark -> unknown

A finished run is marked done (replay refuses it without ``--force``); cut off
and not started runs are safe to replay (the flow never finished); an unknown
one may have done its work. With Prefect's ~1 s heartbeat wait at the end of
each run (see ``funcx_flows.prefect.flowruns``), most runs cut off by a kill
had in fact finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from funcx_flows.retry import RetryPolicy
from funcx_flows.triggers.state import StateStore

log = logging.getLogger(__name__)
TAG = "funcx-flows-run:"
FINISHED, CUT_OFF, NOT_STARTED, UNKNOWN = "finished", "cut off", "not started", "unknown"
SAFE = (CUT_OFF, NOT_STARTED)


def run_tag(run_id: str) -> str:
    return TAG + run_id


def _run_id(flow_run: Any) -> str | None:
    for tag in getattr(flow_run, "tags", None) or ():
        if tag.startswith(TAG):
            return str(tag[len(TAG):])
    return None


def with_marks(flow: Any, store: StateStore) -> Any:
    """``flow`` with hooks that write the began and finished marks of a tagged run."""

    def began(_flow: Any, flow_run: Any, _state: Any) -> None:
        run_id = _run_id(flow_run)
        if run_id is not None:
            store.flow_run_began(run_id, str(flow_run.id))

    def finished(_flow: Any, flow_run: Any, _state: Any) -> None:
        run_id = _run_id(flow_run)
        if run_id is not None:
            store.flow_run_finished(run_id, str(flow_run.id))

    options: dict[str, Any] = {"on_completion": [finished, *flow.on_completion_hooks]}
    if hasattr(flow, "on_running_hooks"):
        options["on_running"] = [began, *flow.on_running_hooks]
    return flow.with_options(**options)


def check(store: StateStore, run_ids: Sequence[str],
          policy: RetryPolicy | None = None) -> dict[str, str]:
    """Judge these interrupted runs (see the module's diagram); returns run id -> verdict."""
    verdicts: dict[str, str] = {}
    if not run_ids:
        return verdicts
    marks = {m.run_id: m for m in store.flow_run_marks(run_ids, limit=len(run_ids))}
    asked: dict[str, list[Any]] | None = None
    reason = "no Prefect API to ask"
    rest = [r for r in run_ids if not (r in marks and marks[r].finished_at)]
    if rest and _api_configured():
        try:
            asked = _ask_prefect(rest, policy)
        except Exception as exc:  # the API is down or refuses: judge without it
            reason = f"the Prefect API could not be asked ({type(exc).__name__}: {exc})"
            log.warning("checking interrupted runs: %s", reason)
    for run_id in run_ids:
        mark = marks.get(run_id)
        if mark is not None and mark.finished_at:
            verdict, detail = FINISHED, (f"its flow run {mark.flow_run_id} recorded its "
                                         f"completion at {_when(mark.finished_at)}")
        elif asked is not None:
            verdict, detail = _judge(asked.get(run_id, []))
        elif mark is not None and mark.began_at:
            verdict, detail = CUT_OFF, (f"its flow run {mark.flow_run_id} began at "
                                        f"{_when(mark.began_at)} and never recorded completion")
        else:
            verdict, detail = UNKNOWN, f"no marks and {reason}: it may have done its work"
        if verdict == FINISHED:
            store.mark_done(run_id, f"finished before the trigger stopped: {detail}")
        store.set_verdict(run_id, verdict, detail)
        verdicts[run_id] = verdict
    return verdicts


def _judge(flow_runs: list[Any]) -> tuple[str, str]:
    for fr in flow_runs:
        if fr.state is not None and fr.state.is_completed():
            return FINISHED, f"Prefect flow run {fr.name} ({fr.id}) is Completed"
    if flow_runs:
        fr = flow_runs[0]
        return CUT_OFF, (f"Prefect flow run {fr.name} ({fr.id}) never finished "
                         f"(was {fr.state.name if fr.state else 'without a state'})")
    return NOT_STARTED, "no Prefect flow run was created for it"


def _api_configured() -> bool:
    """Asking without an API URL would start a private ephemeral server: not for this."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def _ask_prefect(run_ids: Sequence[str], policy: RetryPolicy | None) -> dict[str, list[Any]]:
    """Top-level flow runs tagged with each run; those still Running (nothing runs them
    now: their process died) are set Crashed, as Prefect would after missed heartbeats."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentTaskRunId,
        FlowRunFilterTags,
    )
    from prefect.states import Crashed

    from funcx_flows.prefect.api_retry import API_RETRY, prefect_client

    found: dict[str, list[Any]] = {}
    with prefect_client(policy or API_RETRY) as client:
        for run_id in run_ids:
            runs = list(client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[run_tag(run_id)]),
                parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True))))
            for fr in runs:
                if fr.state is not None and not fr.state.is_final():
                    client.set_flow_run_state(fr.id, Crashed(
                        message="the funcx-flows trigger running it stopped (found on restart)"),
                        force=True)
            found[run_id] = runs
    return found


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
