"""``funcx-flows trigger run|status|replay``."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Column, Table

from funcx_flows.errors import NotFound
from funcx_flows.triggers import config as cfg
from funcx_flows.triggers.serve import build, default_state_path, serve
from funcx_flows.triggers.state import FAILED, QUEUED, RUNNING, StateStore

console = Console()


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
def run(config_file: Path) -> None:
    """Watch and start pipelines as CONFIG_FILE says, until interrupted."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = cfg.load(config_file)
    store = StateStore(default_state_path(config.state_db))
    triggers = build(config, store)
    click.echo(f"serving {len(triggers)} trigger(s); state in {store.path}; Ctrl-C stops",
               err=True)
    with contextlib.ExitStack() as stack:
        if _prefect_flows(config):
            from funcx_flows.prefect.server import prefect_api

            stack.enter_context(prefect_api())
        serve(*triggers, handle_signals=True)
    store.close()


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
def status(config_file: Path | None, state_db: str | None, limit: int) -> None:
    """What fired, what is queued, what failed."""
    store = _store(config_file, state_db)
    counts = store.counts()
    if not counts:
        click.echo(f"nothing has fired yet (state {store.path})")
        return
    table = Table("trigger", "done", "running", "queued", "failed", title="runs")
    for trig, c in sorted(counts.items()):
        table.add_row(trig, *(str(c.get(s, 0)) for s in ("done", RUNNING, QUEUED, FAILED)))
    console.print(table)
    recent = store.runs(states=(FAILED, QUEUED, RUNNING), limit=limit)
    if recent:
        t = Table(Column("run", no_wrap=True), "trigger", "state", "attempts", "about", "error",
                  title="not done")
        for r in recent:
            about = r.context.get("task_id") or ", ".join(r.context.get("paths", [])[:2])
            t.add_row(r.run_id, r.trigger, r.state, str(r.attempts), about[:60],
                      (r.error or "").splitlines()[0][:80] if r.error else "")
        console.print(t)
    store.close()


@trigger_group.command()
@click.argument("what")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None)
@click.option("--state-db", default=None)
def replay(what: str, config_file: Path | None, state_db: str | None) -> None:
    """Start again the run(s) of a file path, a transfer task id, or a run id."""
    store = _store(config_file, state_db)
    runs = [r for r in store.runs(limit=100000) if r.run_id == what] or store.find_runs(what)
    if not runs:
        store.close()
        raise NotFound(f"no run mentions {what!r} (see `funcx-flows trigger status`)")
    for r in runs:
        store.requeue(r.run_id)
        click.echo(f"queued run {r.run_id} of trigger {r.trigger} again "
                   f"({time.strftime('%H:%M:%S')}); a running `trigger run` starts it")
    store.close()
