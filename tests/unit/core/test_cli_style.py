"""Both command lines say ``Error: ...`` in one line, whether the error is click's
(a bad option) or ours (a FuncxFlowsError), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(home, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNCX_FLOWS_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", f"from {module} import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_one_error_style_in_both_clis(home):
    cases = [("funcx_flows.endpoint.cli", ("status", "nosuch")),  # EndpointNotConfigured
             ("funcx_flows.endpoint.cli", ("start", "bad name!")),  # ConfigError
             ("funcx_flows.cli", ("task", "list")),  # no service URL: ConfigError
             ("funcx_flows.cli", ("service", "stop"))]  # click.ClickException
    for module, args in cases:
        out = _run(home, module, *args)
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.startswith("Error: ") and len(out.stderr.splitlines()) == 1, \
            (args, out.stderr)
