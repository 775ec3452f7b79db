"""The agent's launch plan, made from the endpoint's config: what every manager of
this run shares (launch.py's ``LaunchPlan``), with the workers' confinement (a
bubblewrap sandbox, a container engine, a folder per task) checked here, at the
endpoint's start, so that a mistake is one message now rather than one per worker.

Apart from launch.py because that module travels to every compute node and must
stay light; this one reads the validated config (pydantic) and runs on the
endpoint's host only.
"""

from __future__ import annotations

from pathlib import Path

from funcx_flows.endpoint.config import EndpointConfig, walltime_seconds
from funcx_flows.endpoint.container import ContainerSpec, parse_options
from funcx_flows.endpoint.launch import LaunchPlan, MPIPool
from funcx_flows.endpoint.providers.registry import is_batch
from funcx_flows.endpoint.sandbox import SandboxSpec, default_spec
from funcx_flows.endpoint.taskdir import TaskDirSpec


def launch_plan(config: EndpointConfig, folder: Path, credentials: Path) -> LaunchPlan:
    """``folder``: the endpoint's (``<funcx home>/endpoints/NAME``); ``credentials``:
    the managers' credentials file. Raises ``ConfigError`` for what would fail at
    every worker (no bwrap, no engine or image, a task folder root that cannot hold
    folders). The interchange's address is blank: the agent sets it once its
    interchange is bound (``dataclasses.replace``), after these checks."""
    c = config
    sandbox: SandboxSpec | None = None
    if c.sandbox == "bwrap":
        sandbox = default_spec([str(folder), *c.sandbox_hide], c.sandbox_keep,
                               folder.resolve().parent.parent)
        sandbox.check()
    container: ContainerSpec | None = None
    if c.container is not None:
        k = c.container
        container = ContainerSpec(type=k.type, image=k.image, python=k.python,
                                   options=parse_options(k.options), max_warm=k.max_warm)
        container.check()
    task_dir: TaskDirSpec | None = None
    if c.task_dir is not None:
        task_dir = TaskDirSpec(root=c.task_dir.root, keep_on_failure=c.task_dir.keep_on_failure)
        if not (container and container.image):  # (else: the folders are in the image)
            task_dir.check()
    return LaunchPlan(
        interchange="", workers=c.max_workers_per_node,
        prefetch=c.max_workers_per_node, heartbeat_period_s=c.heartbeat_period_s,
        heartbeat_threshold_s=c.heartbeat_threshold_s, credentials=str(credentials),
        sandbox=sandbox,
        runs_for_s=(walltime_seconds(c.walltime) - c.walltime_margin_s
                    if is_batch(c.provider) else None),
        mpi=None if c.mpi is None else MPIPool(**c.mpi.model_dump()),
        container=container, task_dir=task_dir)
