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


def test_other_libraries_records_are_quiet_unless_debug():
    import logging

    from funcx_flows.clirun import OwnRecordsFirst

    def passes(f: OwnRecordsFirst, name: str, level: int) -> bool:
        return f.filter(logging.LogRecord(name, level, __file__, 1, "m", None, None))

    info, debug = OwnRecordsFirst(logging.INFO), OwnRecordsFirst(logging.DEBUG)
    assert passes(info, "funcx_flows.triggers.serve", logging.INFO)
    assert not passes(info, "funcx_flows.triggers.serve", logging.DEBUG)
    assert not passes(info, "prefect.flow_runs", logging.INFO)
    assert not passes(info, "httpx", logging.INFO)
    assert passes(info, "prefect.flow_runs", logging.WARNING)
    assert passes(debug, "httpx", logging.INFO) and passes(debug, "prefect", logging.DEBUG)
    assert not passes(OwnRecordsFirst(logging.ERROR), "prefect", logging.WARNING)
