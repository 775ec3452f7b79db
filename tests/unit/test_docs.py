"""The docs that cannot drift: the CLI reference is what the commands say, the README
links every page, and the shell completion the usage guide documents works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_generated_from_the_commands():
    from funcx_flows.clidoc import render

    assert (ROOT / "docs" / "cli.md").read_text() == render(), \
        "docs/cli.md is stale: python -m funcx_flows.clidoc > docs/cli.md"


def test_the_readme_links_every_page_of_the_docs():
    linked = set(re.findall(r"\(docs/([\w-]+\.md)", (ROOT / "README.md").read_text()))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"not linked from README.md: {sorted(pages - linked)}"


def test_shell_completion_as_documented():
    for prog, module, typed, expected in (
            ("funcx-flows", "funcx_flows.cli", "ta", "task"),
            ("funcx-endpoint", "funcx_flows.endpoint.cli", "sta", "status")):
        var = f"_{prog.replace('-', '_').upper()}_COMPLETE"
        env = {**os.environ, var: "bash_complete", "COMP_WORDS": f"{prog} {typed}",
               "COMP_CWORD": "1"}
        # click names the program after argv[0], as the installed script is named
        code = f"import sys; sys.argv[0] = {prog!r}; from {module} import main; main()"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60)
        assert f"plain,{expected}" in out.stdout.splitlines(), (prog, out.stdout, out.stderr)
