"""The README's first command: `funcx-flows demo` runs end to end and cleans up."""

import subprocess
import sys


def test_demo_runs_and_leaves_nothing_behind(home):
    out = subprocess.run(
        [sys.executable, "-m", "funcx_flows.cli", "demo", "--tasks", "300", "--frames", "25",
         "--batch", "10"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "300 / 0" in out.stdout  # succeeded / failed
    assert "throughput" in out.stdout
    assert "stopped every process" in out.stdout
    assert "frames reconstructed and published" in out.stdout
    line = next(x for x in out.stdout.splitlines() if "frames reconstructed and published" in x)
    assert line.split()[-2] == "25"
