"""``funcx-flows trigger run|status|replay``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from funcx_flows.clirun import LOG_LEVELS, echo_json, json_option, setup_cli_logging
from funcx_flows.errors import InvalidRequest, NotFound
from funcx_flows.triggers import config as cfg
from funcx_flows.triggers import recovery
from funcx_flows.triggers.serve import build, default_state_path, serve
from funcx_flows.triggers.state import (
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    StateStore,
)


def _console() -> Console:
    """Wide when piped (a log or a test reads it), the terminal's width otherwise."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _store(config_path: Path | None, state_db: str | None) -> StateStore:
    configured = state_db or ""
    if not configured and config_path is not None:
        configured = cfg.load(config_path).state_db
    return StateStore(default_state_path(configured))


@click.group("trigger")
def trigger_group() -> None:
    """Start pipelines when files land or Globus transfers complete."""


@trigger_group.command()
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default=None, help="What to print (default $FUNCX_FLOWS_LOG_LEVEL, else info); "
                                 "Prefect's and httpx's own lines only from warning, or at "
                                 "debug.")
@click.option("-v", "--verbose", is_flag=True, help="The same as --log-level debug.")
def run(config_file: Path, log_level: str | None, verbose: bool) -> None:
    """Watch and start pipelines as CONFIG_FILE says, until interrupted. Flow paths in
    CONFIG_FILE are relative to its folder."""
    setup_cli_logging("debug" if verbose else log_level)
    config = cfg.load(config_file)
    store = StateStore(default_state_path(config.state_db))
    triggers = build(config, store)
    click.echo(f"serving {len(triggers)} trigger(s); state in {store.path}; Ctrl-C stops",
               err=True)
    with contextlib.ExitStack() as stack:
        if config.report is not None:
            from funcx_flows.triggers.report import Reporter

            stack.enter_context(Reporter(config.report, config, store, config_file))
        if _prefect_flows(config):
            from funcx_flows.prefect.server import prefect_api

            stack.enter_context(prefect_api(records=_api_records(store)))
        serve(*triggers, handle_signals=True)
    store.close()


def _api_records(store: StateStore) -> Path:
    """Where the temporary Prefect API servers of this state database are written down,
    so that a restart stops one whose trigger process died (``prefect.server``)."""
    return Path(store.path).parent / f"{store.path.name}.prefect-api"


def _prefect_flows(config: cfg.TriggersFile) -> bool:
    """Whether any in-process target is a Prefect flow (which needs an API)."""
    from prefect import Flow

    from funcx_flows.triggers.targets import load_callable

    return any(t.target.kind == "flow" and isinstance(load_callable(t.target.flow), Flow)
               for t in config.triggers)


@trigger_group.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="The triggers YAML (for its state_db).")
@click.option("--state-db", default=None, help="The state database (default in the home).")
@click.option("--limit", default=20, show_default=True)
@json_option
def status(config_file: Path | None, state_db: str | None, limit: int, as_json: bool) -> None:
    """What fired, what is queued, what failed."""
    store = _store(config_file, state_db)
    try:
        if as_json:
            echo_json(_status_document(store, limit))
        else:
            _print_status(store, limit)
    finally:
        store.close()


def _status_document(store: StateStore, limit: int) -> dict[str, Any]:
    """``trigger status --json``: what the tables show, as data."""
    counts, waiting, problems = store.counts(), store.waiting_files(), store.marks("problem")
    recent = store.runs(states=(FAILED, INTERRUPTED, QUEUED, RUNNING), limit=limit)
    marks = {m.run_id: m for m in store.flow_run_marks([r.run_id for r in recent],
                                                      limit=len(recent))} if recent else {}
    return {
        "state_db": str(store.path),
        "triggers": {t: {"runs": counts.get(t, {}), "waiting_files": waiting.get(t, 0),
                         "problem": problems.get(t) or None}
                     for t in sorted(set(counts) | set(waiting) | set(problems))},
        "not_done": [{**dataclasses.asdict(r), "verdict": getattr(marks.get(r.run_id),
                                                                   "verdict", None)}
                     for r in recent],
        "transfers": {"decided": store.transfer_counts(), "gaps": store.gaps()},
    }


def _print_status(store: StateStore, limit: int) -> None:
    console = _console()
    counts, waiting, problems = store.counts(), store.waiting_files(), store.marks("problem")
    names = sorted(set(counts) | set(waiting) | set(problems))
    if not names:
        click.echo(f"nothing has fired yet (state {store.path})")
        _print_transfers(store, console)
        return
    table = Table("trigger", "done", "running", "queued", "failed", "interrupted",
                  "waiting files", "problem", title=f"triggers ({store.path})")
    for trig in names:
        c = counts.get(trig, {})
        table.add_row(trig, *(str(c.get(s, 0)) for s in (DONE, RUNNING, QUEUED, FAILED,
                                                          INTERRUPTED)),
                      str(waiting.get(trig, 0)), problems.get(trig, ""))
    console.print(table)
    recent = store.runs(states=(FAILED, INTERRUPTED, QUEUED, RUNNING), limit=limit)
    if recent:
        checked = {m.run_id: m for m in store.flow_run_marks([r.run_id for r in recent],
                                                            limit=len(recent))}
        t = Table(Column("run", no_wrap=True), "trigger", "state", "attempts", "about", "error",
                  title="not done (replay a run with `funcx-flows trigger replay RUN_ID`)")
        for r in recent:
            mark = checked.get(r.run_id)
            error = (r.error or "").splitlines()[0][:80] if r.error else ""
            if r.state == INTERRUPTED and mark is not None and mark.verdict:
                error = _verdict_text(mark.verdict, mark.detail)
            t.add_row(r.run_id, r.trigger, r.state, str(r.attempts), _about(r.context), error)
        console.print(t)
    finished = store.flow_run_marks(verdict=recovery.FINISHED, limit=limit)
    if finished:
        t = Table(Column("run", no_wrap=True), "how we know",
                  title="cut off by a stop but had finished: marked done, not to be replayed")
        for m in finished:
            t.add_row(m.run_id, m.detail or "")
        console.print(t)
    _print_transfers(store, console)


def _ago(epoch: str) -> str:
    if not epoch:
        return "none yet"
    when = float(epoch)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return f"{stamp} ({max(0.0, time.time() - when):.0f}s ago)"


def _print_transfers(store: StateStore, console: Console) -> None:
    """Globus triggers: where each stands, what it decided, what it could not list."""
    marks = {key: store.marks(key) for key in (
        "floor", "completion_time", "last_complete_poll", "poll_started", "listing_from",
        "problem", "stalled")}
    if not marks["floor"]:
        return
    decided, gaps = store.transfer_counts(), store.gaps()
    table = Table("trigger", "start point", "watermark", "last complete poll", "seen",
                  "fired", "rejected", title="Globus transfer triggers")
    notes = []
    for trig in sorted(marks["floor"]):
        m = {key: values.get(trig, "") for key, values in marks.items()}
        fired, rejected = (decided.get(trig, {}).get(k, 0) for k in ("fired", "rejected"))
        table.add_row(trig, m["floor"] + "Z", m["completion_time"] or "none yet",
                      _ago(m["last_complete_poll"]), f"{fired + rejected:,}", f"{fired:,}",
                      f"{rejected:,}")
        if m["stalled"]:
            notes.append(f"{trig}: STALLED: {m['stalled']}")
        if float(m["poll_started"] or 0) > float(m["last_complete_poll"] or 0) and (
                m["problem"] or m["stalled"]):
            notes.append(f"{trig}: not yet listed completely: completed from "
                         f"{m['listing_from']}Z on ({m['problem'] or 'poll in progress'})")
        notes.extend(f"{trig}: not listed completely: {what}: {detail}"
                     for what, detail in gaps.get(trig, []))
    console.print(table)
    for line in notes:
        click.echo(line)


def _about(context: dict[str, Any]) -> str:
    paths = context.get("paths", [])
    about = context.get("task_id") or (
        paths[0] + (f" (+{len(paths) - 1})" if len(paths) > 1 else "") if paths else "")
    return str(about) if len(about) <= 60 else "…" + about[-59:]


def _verdict_text(verdict: str, detail: str | None) -> str:
    if verdict in recovery.SAFE:
        return f"never finished, safe to replay: {detail}"
    return f"{verdict}: {detail}"


@trigger_group.command()
@click.argument("what", required=False)
@click.option("--interrupted", is_flag=True,
              help="Every interrupted run that never finished (see `trigger status`).")
@click.option("--force", is_flag=True,
              help="Also runs that had finished before a stop, or whose end is unknown.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None)
@click.option("--state-db", default=None)
def replay(what: str | None, interrupted: bool, force: bool, config_file: Path | None,
           state_db: str | None) -> None:
    """Start again the run(s) of a file path, a transfer task id, or a run id.

    The runs go back to the queue; a running `funcx-flows trigger run` starts them.
    A run cut off by a stop that had in fact finished is not started again (nor, with
    --interrupted, one whose end is unknown) unless --force says so."""
    if (what is None) == (not interrupted):
        raise InvalidRequest("name a file path, transfer task id or run id, or give "
                             "--interrupted (not both)")
    store = _store(config_file, state_db)
    try:
        if interrupted:
            runs = store.runs(states=(INTERRUPTED,), limit=1_000_000)
            if not runs:
                click.echo("no interrupted runs")
        else:
            assert what is not None
            runs = store.find_runs(what)
            if not runs and os.path.exists(what):
                runs = store.find_runs(os.path.abspath(what))
            if not runs:
                raise NotFound(f"no run of a file, transfer task or run id {what!r} "
                               "(see `funcx-flows trigger status`)")
        verdicts = {m.run_id: m for m in store.flow_run_marks([r.run_id for r in runs],
                                                             limit=len(runs))}
        for r in runs:
            if r.state == RUNNING:
                click.echo(f"run {r.run_id} of trigger {r.trigger} is being started now; "
                           "not queued again")
                continue
            mark = verdicts.get(r.run_id)
            verdict = mark.verdict if mark is not None else None
            if not force and (verdict == recovery.FINISHED or (
                    interrupted and verdict not in recovery.SAFE)):
                why = mark.detail if mark is not None and mark.detail else "its end is unknown"
                click.echo(f"run {r.run_id} of trigger {r.trigger} not queued: "
                           f"{verdict or 'unknown'} ({why}); --force queues it anyway")
                continue
            store.requeue(r.run_id)
            click.echo(f"queued run {r.run_id} of trigger {r.trigger} again (was {r.state})")
    finally:
        store.close()
