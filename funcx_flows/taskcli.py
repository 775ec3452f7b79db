"""``funcx-flows task list|show|cancel|result``: your tasks, from the service's REST API.

Tables for people, ``--json`` for scripts (the API's records as they come, one
JSON document on stdout). Talks to the service through ``Client``, so the
service URL and token come from where the SDK finds them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import click

from funcx_flows.clirun import echo_json, json_option
from funcx_flows.sdk.client import Client

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """A time on the command line: ``30m``, ``2h``, ``1d`` ago; epoch seconds; or ISO
    8601 (local time when it names no zone, as a person typing it means)."""
    text = text.strip()
    ago = _AGO.match(text)
    if ago:
        return (time.time() if now is None else now) - float(ago[1]) * _UNIT_S[ago[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time: use 30m, 2h, 1d (ago), epoch "
                                 "seconds or ISO 8601 (2026-01-31T12:00)") from None


def _states(values: Iterable[str]) -> list[str]:
    """Repeated and comma-separated alike; the service says which are not states."""
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def _stamp(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _client() -> Client:
    return Client()


@click.group("task")
def task_group() -> None:
    """Your tasks: list them with filters, show one, cancel, get a result."""


@task_group.command("list")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Only tasks in this state (repeat, or comma-separated): received, "
                   "waiting_for_endpoint, dispatched, running, success, failed, cancelled.")
@click.option("--endpoint", default=None, help="Only tasks of this endpoint (name or id).")
@click.option("--function", "function_id", default=None, help="Only tasks of this function id.")
@click.option("--group", "group_id", default=None, help="Only tasks of this group id.")
@click.option("--since", default=None, help="Received since: 30m, 2h, 1d, epoch or ISO 8601.")
@click.option("--until", default=None, help="Received before (same forms as --since).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="Tasks per page.")
@click.option("--cursor", default=None, help="Start after the page that gave this cursor.")
@click.option("--all", "all_pages", is_flag=True, help="Every page, not only the first.")
@json_option
def list_(states: tuple[str, ...], endpoint: str | None, function_id: str | None,
          group_id: str | None, since: str | None, until: str | None, limit: int,
          cursor: str | None, all_pages: bool, as_json: bool) -> None:
    """Your tasks, newest first."""
    filters: dict[str, Any] = {
        "state": _states(states), "endpoint_id": endpoint, "function_id": function_id,
        "group_id": group_id, "limit": limit,
        "since": parse_when(since) if since else None,
        "until": parse_when(until) if until else None}
    with _client() as client:
        page: dict[str, Any]
        if all_pages:
            page = {"tasks": list(client.iter_tasks(cursor=cursor, **filters)),
                    "next_cursor": None}
        else:
            page = client.list_tasks(cursor=cursor, **filters)
    if as_json:
        echo_json(page)
        return
    _print_table(page["tasks"])
    if page["next_cursor"]:
        click.echo(f"more: --cursor {page['next_cursor']} (or --all)", err=True)


def _print_table(tasks: list[Mapping[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Column, Table

    table = Table(Column("task id", no_wrap=True), Column("state", no_wrap=True), "endpoint",
                  "function", "received", "completed", "error")
    for t in tasks:
        err = t.get("error") or {}
        table.add_row(t["task_id"], t["state"], t["endpoint_id"][:8], t["function_id"][:8],
                      _stamp(t["timestamps"].get("received")),
                      _stamp(t["timestamps"].get("completed")),
                      f"{err['code']}: {err['message']}"[:80] if err else "")
    Console().print(table)
    if not tasks:
        click.echo("no tasks match", err=True)


@task_group.command()
@click.argument("task_id")
@json_option
def show(task_id: str, as_json: bool) -> None:
    """One task: its state, times, attempts, error and output."""
    with _client() as client:
        record = client.get_task(task_id)
    if as_json:
        echo_json(record)
        return
    for key in ("task_id", "state", "endpoint_id", "function_id", "group_id", "attempts"):
        if record.get(key) is not None:
            click.echo(f"{key}: {record[key]}")
    for state, at in record.get("timestamps", {}).items():
        click.echo(f"  {state}: {_stamp(at)}")
    err = record.get("error")
    if err:
        click.echo(f"error: {err['code']}: {err['message']}")
        if err.get("remote_traceback"):
            click.echo(err["remote_traceback"].rstrip())
    if record.get("stdout"):
        click.echo("stdout:\n" + record["stdout"].rstrip())


@task_group.command()
@click.argument("task_ids", nargs=-1, required=True)
@json_option
def cancel(task_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel tasks that have not ended (ended ones are left as they are)."""
    with _client() as client:
        cancelled = client.cancel_many(task_ids)
    if as_json:
        echo_json({"cancelled": cancelled})
        return
    for tid in task_ids:
        done = "cancelled" if tid in cancelled else "not cancelled (ended, or not yours)"
        click.echo(f"{tid}: {done}")


@task_group.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True,
              help="Print the value as JSON (repr() for what JSON cannot hold).")
def result(task_id: str, as_json: bool) -> None:
    """A finished task's value; its error (exit 1) if it failed."""
    with _client() as client:
        value = client.get_result(task_id, original_exceptions=False)
    if as_json:
        echo_json(value)
    else:
        click.echo(repr(value))
