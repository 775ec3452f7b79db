"""The Slurm tests' helpers (importable from any folder): is the cluster up, our
blocks' jobs, and the endpoint config of the Slurm tests."""

from __future__ import annotations

import shutil
import subprocess


def slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and ("idle" in out.stdout or "mix" in out.stdout)


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
