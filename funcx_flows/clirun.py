"""Running a click group as a user-facing command: the one place where errors
become a message and an exit code (never a traceback). Every error reads
``Error: ...``, as click's own usage errors do, in both CLIs."""

from __future__ import annotations

import json
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
