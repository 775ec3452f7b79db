"""The Slurm tests' helpers (importable from any folder): is the cluster up, our
blocks' jobs, and the endpoint config of the Slurm tests."""

from __future__ import annotations

import shutil
import subprocess


def node_states() -> str | None:
    """The cluster's node states as sinfo says them, or None with no cluster."""
    if shutil.which("sinfo") is None:
        return None
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout if out.returncode == 0 else None


def slurm_up() -> bool:
    """A node can take a job now (not one still busy with jobs being cancelled)."""
    states = node_states()
    return states is not None and ("idle" in states or "mix" in states)


def our_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True,
                         timeout=30)
    return [line.split()[0] for line in out.stdout.splitlines() if "funcx-block-" in line]


def cancel_our_jobs() -> None:
    jobs = our_jobs()
    if jobs:
        subprocess.run(["scancel", *jobs], timeout=30, check=False)


HPC = {"provider": "slurm", "walltime": "00:10:00", "nodes_per_block": 1, "init_blocks": 1,
       "min_blocks": 0, "max_blocks": 2, "max_workers_per_node": 2, "status_poll_interval": 1,
       "strategy_period": 0.5, "idle_timeout": 4, "heartbeat_period_s": 0.5,
       "heartbeat_threshold_s": 5, "max_retries_on_system_failure": 1}
