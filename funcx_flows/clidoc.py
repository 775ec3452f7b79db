"""docs/cli.md, written from the click commands themselves, so that it cannot drift:
``python -m funcx_flows.clidoc > docs/cli.md`` (a test fails when the file differs).

Each command's ``--help`` as click prints it, at a fixed width, under a heading per
command, both programs (``funcx-flows`` and ``funcx-endpoint``) and every group.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import click

WIDTH = 88

PREAMBLE = """\
# Command-line reference

Generated from the commands by `python -m funcx_flows.clidoc > docs/cli.md`; do not
edit by hand (a test compares it with the commands). Every command that lists or
shows something takes `--json` for scripts. Errors are one line, `Error: ...`, and
exit 1 (2 for a usage mistake). Where the logs are, and shell completion:
[usage.md](usage.md#logs-and-shell-completion).
"""


def _walk(cmd: click.Command, path: list[str],
          parent: click.Context | None) -> Iterator[tuple[str, str]]:
    ctx = click.Context(cmd, info_name=path[-1], parent=parent, max_content_width=WIDTH,
                        terminal_width=WIDTH)
    yield " ".join(path), cmd.get_help(ctx)
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, [*path, name], ctx)


def render() -> str:
    programs = [("funcx-flows", "funcx_flows.cli"), ("funcx-endpoint", "funcx_flows.endpoint.cli")]
    out = [PREAMBLE]
    for prog, module in programs:
        group: click.Command = importlib.import_module(module).cli
        for name, text in _walk(group, [prog], None):
            level = "##" if name == prog else "###"
            out.append(f"{level} `{name}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
