"""Blocks as scheduler jobs through PSI/J, one small subclass per scheduler.

Each block is one PSI/J job running ``bash -c`` with the endpoint's
``worker_init`` lines, then the manager command under the configured launcher
on ``nodes_per_block`` nodes. ``PsijProvider`` does this for any PSI/J executor;
a subclass names its executor and may add what its scheduler needs (defaults for
custom attributes, a view of its own where PSI/J's can be stale: see
``slurm.py``). Which class serves which config name is declared in
``registry.py``.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from funcx_flows.endpoint.config import EndpointConfig, walltime_seconds
from funcx_flows.endpoint.providers.base import (
    CANCELLED,
    ENDED,
    FAILED,
    FINAL_STATES,
    PENDING,
    RUNNING,
    Block,
    EndedBlocks,
)

log = logging.getLogger(__name__)

_LAUNCHERS = {
    "single": "{command}",
    "srun": "srun --ntasks-per-node=1 --nodes={nodes} {command}",
    "mpirun": "mpirun -np {nodes} --map-by ppr:1:node {command}",
    "mpiexec": "mpiexec -n {nodes} -ppn 1 {command}",
    "aprun": "aprun -n {nodes} -N 1 {command}",
    "jsrun": "jsrun -n {nodes} -r 1 -a 1 {command}",
}


def scheduler_options_to_attributes(provider: str, text: str) -> dict[str, str]:
    """``#SBATCH --qos=debug`` style lines as PSI/J custom attributes (``slurm.qos``)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        for prefix in ("#SBATCH", "#PBS", "#BSUB", "#COBALT", "#FLUX:"):
            line = line.removeprefix(prefix).strip()
        tokens = shlex.split(line)
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok.startswith("--"):
                key, eq, value = tok[2:].partition("=")
                if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                    value, i = tokens[i + 1], i + 1
                out[f"{provider}.{key}"] = value or ""
            i += 1
    return out


def job_script(config: EndpointConfig, command: str) -> str:
    lines = [line for line in config.worker_init.splitlines() if line.strip()]
    lines.append(_LAUNCHERS[config.launcher].format(command=command,
                                                    nodes=config.nodes_per_block))
    return "\n".join(["set -e", *lines[:-1], "set +e", lines[-1]]) if len(lines) > 1 \
        else lines[0]


class PsijProvider:
    """A PSI/J executor's jobs as blocks. Subclasses set ``executor_name``."""

    executor_name: ClassVar[str] = ""

    @classmethod
    def for_endpoint(cls, config: EndpointConfig, log_dir: Path) -> PsijProvider:
        return cls(config, log_dir)

    def __init__(self, config: EndpointConfig, log_dir: Path) -> None:
        from psij import JobExecutor

        self.config = config
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        from psij.executors.batch.batch_scheduler_executor import (
            BatchSchedulerExecutorConfig,
        )

        executor_config = BatchSchedulerExecutorConfig(
            work_directory=log_dir / "psij",
            queue_polling_interval=max(1, int(config.status_poll_interval)),
            initial_queue_polling_delay=0,
            # tolerate a controller outage; a subclass may check for itself (refresh)
            queue_polling_error_threshold=1_000_000,
            keep_files=True)
        self.executor = JobExecutor.get_instance(self.executor_name, config=executor_config)
        self._jobs: dict[str, Any] = {}
        self._blocks: dict[str, Block] = {}
        self._ended = EndedBlocks()
        self._lock = threading.Lock()

    # ------------------------------------------------------------- submit --

    def submit(self, block_id: str, command: str) -> Block:
        from psij import Job, JobAttributes, JobSpec, ResourceSpecV1

        c = self.config
        custom: dict[str, object] = {
            **self.custom_defaults(block_id),
            **scheduler_options_to_attributes(self.executor_name, c.scheduler_options),
            **c.custom_attributes}
        seconds = walltime_seconds(c.walltime)
        spec = JobSpec(
            executable="/bin/bash", arguments=["-c", job_script(c, command)],
            directory=self.log_dir,
            stdout_path=self.log_dir / f"block-{block_id}.out",
            stderr_path=self.log_dir / f"block-{block_id}.err",
            # an MPI endpoint's block lends all its nodes' cores to its tasks
            resources=ResourceSpecV1(node_count=c.nodes_per_block,
                                     exclusive_node_use=c.mpi is not None),
            attributes=JobAttributes(
                duration=timedelta(seconds=seconds), queue_name=c.queue or None,
                account=c.account or None, custom_attributes=custom or None),
            launcher="single")
        job = Job(spec)
        block = Block(block_id=block_id, nodes=c.nodes_per_block, state=PENDING,
                      walltime_s=float(seconds))
        job.set_job_status_callback(lambda j, status: self._on_status(block_id, j, status))
        with self._lock:
            self._blocks[block_id] = block
            self._jobs[block_id] = job
        try:
            self.executor.submit(job)
        except Exception as exc:
            with self._lock:
                block.state = FAILED
                block.message = f"{type(exc).__name__}: {exc}".strip()
            raise
        block.job_id = str(job.native_id or "")
        return block

    def _on_status(self, block_id: str, job: Any, status: Any) -> None:
        from psij import JobState

        with self._lock:
            block = self._blocks.get(block_id)
            if block is None or block.state in FINAL_STATES:
                return
            block.job_id = str(job.native_id or block.job_id)
            state = status.state
            if state == JobState.ACTIVE:
                block.state = RUNNING
            elif state == JobState.COMPLETED:
                block.state = ENDED
            elif state == JobState.CANCELED:
                block.state = CANCELLED
            elif state == JobState.FAILED:
                if self.controller_trouble(status):
                    log.warning("block %s: PSI/J says failed (%s); checking for ourselves",
                                block_id, status.message)
                    return
                block.state = FAILED
                block.message = self._failure_message(block_id, status)

    # ------------------------------------------------ what a scheduler adds --

    def custom_defaults(self, block_id: str) -> dict[str, object]:
        """PSI/J custom attributes a block gets unless the config sets them."""
        return {}

    def controller_trouble(self, status: Any) -> bool:
        """Whether a FAILED status may only mean that the scheduler could not be
        asked (then the block keeps its state until ``refresh`` knows better)."""
        return False

    def refresh(self) -> None:
        """Called by ``poll``: where PSI/J's view can be stale, look for yourself."""

    def _failure_message(self, block_id: str, status: Any) -> str:
        parts = [str(status.message or "").strip()]
        if status.exit_code is not None:
            parts.append(f"exit code {status.exit_code}")
        try:
            tail = (self.log_dir / f"block-{block_id}.err").read_text()[-800:].strip()
        except OSError:
            tail = ""
        if tail:
            parts.append(f"stderr: {tail}")
        return "; ".join(p for p in parts if p) or "the job failed"

    # --------------------------------------------------------------- poll --

    def poll(self) -> list[Block]:
        self.refresh()
        with self._lock:
            answer = [Block(**vars(b)) for b in self._blocks.values()]
            forgotten = [(block_id, self._jobs.pop(block_id, None))
                         for block_id in self._ended.prune(self._blocks)]
        for block_id, job in forgotten:
            self._remove_files(block_id, job)
        return answer

    def _remove_files(self, block_id: str, job: Any) -> None:
        """A forgotten block's output, and the script and state files PSI/J keeps
        for its job (named by the job's id in its work directory)."""
        paths = [self.log_dir / f"block-{block_id}.{ext}" for ext in ("out", "err")]
        work = getattr(self.executor, "work_directory", None)  # batch schedulers only
        if job is not None and work is not None:
            paths += [Path(work) / f"{job.id}{end}" for end in (".job", "_launcher.log")]
            if job.native_id:
                paths += [Path(work) / f"{job.native_id}{end}" for end in (".ec", ".out")]
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()

    # ------------------------------------------------------------- cancel --

    def cancel(self, block_ids: list[str]) -> None:
        for block_id in block_ids:
            with self._lock:
                job = self._jobs.get(block_id)
                block = self._blocks.get(block_id)
            if job is None or block is None or not block.active:
                continue
            try:
                self.executor.cancel(job)
            except Exception as exc:  # already gone: its final state will tell
                log.warning("cancel of block %s: %s", block_id, exc)
            with self._lock:
                block.state = CANCELLED

    def close(self) -> None:
        with self._lock:
            active = [b.block_id for b in self._blocks.values() if b.active]
        self.cancel(active)


class PbsProvider(PsijProvider):
    executor_name = "pbs"


class LsfProvider(PsijProvider):
    executor_name = "lsf"


class FluxProvider(PsijProvider):
    executor_name = "flux"


class CobaltProvider(PsijProvider):
    executor_name = "cobalt"
