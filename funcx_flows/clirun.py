"""Running a click group as a user-facing command: the one place where errors
become a message and an exit code (never a traceback). Every error reads
``Error: ...``, as click's own usage errors do, in both CLIs."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from funcx_flows.errors import FuncxFlowsError


def run(group: click.Group, argv: list[str] | None = None) -> Any:
    try:
        return group.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FuncxFlowsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # a disk that is full or read-only, a folder that is gone
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"Error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def echo_json(data: Any) -> None:
    """What a command's ``--json`` prints: one JSON document on stdout (values JSON
    cannot hold as their repr)."""
    click.echo(json.dumps(data, indent=2, default=repr))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


LOG_LEVELS = ("debug", "info", "warning", "error")


class OwnRecordsFirst(logging.Filter):
    """A console handler's filter: funcx-flows' own records at the chosen level,
    other libraries' (Prefect's per-run lines, httpx's per-request lines) only from
    WARNING, unless the level is DEBUG. Only what is printed changes: Prefect's API
    log handler still gets its flow runs' records."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "funcx_flows" or record.name.startswith("funcx_flows."):
            return record.levelno >= self.level
        others = logging.DEBUG if self.level <= logging.DEBUG else max(self.level,
                                                                       logging.WARNING)
        return record.levelno >= others


def setup_cli_logging(level_name: str | None) -> int:
    """Logging of a long-running command: to stderr, at ``level_name`` (else
    ``$FUNCX_FLOWS_LOG_LEVEL``, else info), others' records quiet (OwnRecordsFirst)."""
    name = (level_name or os.environ.get("FUNCX_FLOWS_LOG_LEVEL") or "info").lower()
    if name not in LOG_LEVELS:
        raise click.BadParameter(f"{name!r} is not one of {', '.join(LOG_LEVELS)}",
                                 param_hint="--log-level / FUNCX_FLOWS_LOG_LEVEL")
    level = getattr(logging, name.upper())
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OwnRecordsFirst(level))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return int(level)
