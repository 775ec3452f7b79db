"""What a type checker sees of a user's flow file: ``remote_task`` typed (not Any) and
keeping the function's signature, as ``@task`` does. mypy runs on a small user file
(the package found on MYPYPATH: setuptools' default editable install hides it from
type checkers, see docs/usage.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

USER_FILE = '''\
from funcx_flows import Client, Executor, remote_task


@remote_task(endpoint="hpc", retries=2)
def add(x: int, y: int = 1) -> int:
    return x + y


def scale(x: float) -> float:
    return x * 2


scaled = remote_task(scale, endpoint="hpc")
reveal_type(add)
reveal_type(scaled)
reveal_type(Executor)
total: int = add(1, y=2)
add(1, "two")
'''


def test_remote_task_keeps_the_functions_signature_for_type_checkers(tmp_path):
    (tmp_path / "flow.py").write_text(USER_FILE)
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), "flow.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    mine = [ln for ln in out.stdout.splitlines() if ln.startswith("flow.py:")]
    text = "\n".join(mine)
    assert 'Revealed type is "prefect.tasks.Task[[x: int, y: int =], int]"' in text, text
    assert 'Revealed type is "prefect.tasks.Task[[x: float], float]"' in text, text
    assert "funcx_flows.sdk.executor.Executor" in text, text
    errors = [ln for ln in mine if ": error:" in ln]
    # the one mistake in the file is caught; nothing else is (no Any, no untyped decorator)
    assert len(errors) == 1 and errors[0].startswith("flow.py:18:"), text
