"""Slurm blocks: PSI/J's Slurm executor, and a view of its own through ``squeue``.

PSI/J polls ``squeue`` and takes a failed poll (the controller restarting, a
timeout) as a failed job. Here such a FAILED keeps the block's state, and
``refresh`` asks ``squeue`` itself now and then (every ``status_poll_interval``),
so that a job the controller still runs, or one left queued, is reported as it is
(docs/pilots.md; tests/integration/slurm).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from typing import Any

from funcx_flows.endpoint.providers.base import CANCELLED, ENDED, FAILED, PENDING, RUNNING

from .psij import PsijProvider  # (relative: mypy resolves it within endpoint/)

log = logging.getLogger(__name__)

SLURM_STATES = {"PENDING": PENDING, "CONFIGURING": PENDING, "RUNNING": RUNNING,
                "COMPLETING": RUNNING, "COMPLETED": ENDED, "CANCELLED": CANCELLED,
                "FAILED": FAILED, "TIMEOUT": ENDED, "NODE_FAIL": FAILED, "PREEMPTED": ENDED,
                "OUT_OF_MEMORY": FAILED, "BOOT_FAIL": FAILED, "DEADLINE": ENDED}
_CONTROLLER_TROUBLE = ("squeue", "unable to contact", "connection refused",
                       "socket timed out", "slurm_load_jobs error")


class SlurmProvider(PsijProvider):
    executor_name = "slurm"
    _last_verify = 0.0  # when refresh last asked squeue (monotonic)

    def custom_defaults(self, block_id: str) -> dict[str, object]:
        return {"slurm.job-name": f"funcx-block-{block_id}"}

    def controller_trouble(self, status: Any) -> bool:
        text = f"{status.message or ''} {status.metadata or ''}".lower()
        return any(w in text for w in _CONTROLLER_TROUBLE)

    def refresh(self) -> None:
        """Ask squeue directly about jobs whose PSI/J state may be stale."""
        now = time.monotonic()
        if now - self._last_verify < max(self.config.status_poll_interval, 1.0):
            return
        self._last_verify = now
        with self._lock:
            active = {b.job_id: b for b in self._blocks.values() if b.active and b.job_id}
        if not active or shutil.which("squeue") is None:
            return
        try:
            out = subprocess.run(
                ["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(active)],
                capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("squeue unavailable (%s); keeping the blocks' last known states", exc)
            return
        if out.returncode != 0 and "invalid job id" not in out.stderr.lower():
            log.warning("squeue failed (%s); keeping the blocks' last known states",
                        out.stderr.strip()[:200])
            return
        seen: dict[str, str] = {}
        for line in out.stdout.splitlines():
            job_id, _, word = line.strip().partition(" ")
            mapped = SLURM_STATES.get(word.strip())
            if mapped is not None:
                seen[job_id] = mapped
        with self._lock:
            for job_id, block in active.items():
                new = seen.get(job_id)
                if new is None or new == block.state or not block.active:
                    continue
                block.state = new
                if new == FAILED:
                    block.message = block.message or "slurm reports the job failed"
