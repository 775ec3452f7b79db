"""``funcx-flows``: the user's command line (demo, service, tokens, tasks, triggers).

This is an edge module: it mounts the command groups of the service and the
triggers lazily, so ``funcx-flows --help`` stays fast and a missing optional part
only affects its own commands. Every ``FuncxFlowsError`` becomes a message and
exit code 1 here, in one place; nothing below prints tracebacks to users.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from funcx_flows.clirun import run

# name -> (module, attribute) of a click group owned by another part
_GROUPS = {
    "service": ("funcx_flows.service.cli", "service_group"),
    "token": ("funcx_flows.service.cli", "token_group"),
    "trigger": ("funcx_flows.triggers.cli", "trigger_group"),
    "task": ("funcx_flows.taskcli", "task_group"),
}
_ALIASES = {"tasks": "task"}  # accepted, not listed


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_GROUPS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        name = _ALIASES.get(name, name)
        if name in _GROUPS:
            module, attr = _GROUPS[name]
            try:
                cmd: click.Command = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise click.ClickException(f"'{name}' commands are unavailable: {exc}") from exc
            return cmd
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="funcx-flows")
def cli() -> None:
    """funcx-flows: Prefect workflows whose tasks run on federated endpoints."""


@cli.command()
@click.option("--tasks", default=1000, show_default=True, help="How many analysis tasks to run.")
@click.option("--workers", default=2, show_default=True, help="Workers on the local endpoint.")
@click.option("--frames", default=40, show_default=True,
              help="Frames the simulated detector writes for the beamline flow (0: skip).")
@click.option("--batch", default=10, show_default=True, help="Frames per beamline flow run.")
def demo(tasks: int, workers: int, frames: int, batch: int) -> None:
    """Run the whole path on the embedded default, then clean up."""
    from funcx_flows.demo import run_demo

    if tasks < 1 or workers < 1 or frames < 0 or batch < 1:
        raise click.BadParameter("--tasks, --workers and --batch must be at least 1, "
                                 "--frames at least 0")
    summary = run_demo(tasks=tasks, workers=workers, frames=frames, batch=batch)
    if summary["failed"]:
        raise click.ClickException(f"{summary['failed']} of {tasks} tasks failed")
    if frames and summary["frames_published"] != frames:
        raise click.ClickException(
            f"the beamline published {summary['frames_published']} of {frames} frames "
            f"({summary['flow_runs_failed']} flow runs failed)")


def main(argv: list[str] | None = None) -> Any:
    return run(cli, argv)


if __name__ == "__main__":
    main()
