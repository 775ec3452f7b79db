"""How a manager is started: one options document, written by the agent, read by the manager.

A manager runs on a compute node, started by a command that the agent hands to
its provider (a pilot job's script, a local process, or nothing at all for an
inline block). Everything the manager must know travels in one typed, validated
record, ``ManagerOptions``, as JSON on the manager's command line::

    python -m funcx_flows.endpoint.manager --options '{"interchange": "tcp://...", ...}'

A field added here is read on both sides; nothing is written out as flags and
parsed back. The manager's credentials are a file (its path is in the document:
a secret on a command line is readable by anyone on the node).

``LaunchPlan`` is the agent's half: what every manager of this run of the
endpoint shares (the interchange's address, workers per node, the sandbox...),
from which each block's options are made. This module stays light: a manager
imports it on every node.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Annotated

import msgspec

from funcx_flows.endpoint.container import ContainerSpec
from funcx_flows.endpoint.sandbox import SandboxSpec
from funcx_flows.endpoint.taskdir import TaskDirSpec
from funcx_flows.errors import ConfigError

MANAGER_MODULE = "funcx_flows.endpoint.manager"
DEFAULT_MAX_RESULT_BYTES = 10 * 1024 * 1024


class MPIPool(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The manager lends its block's nodes to MPI tasks (endpoint/mpi.py)."""

    launcher: str = "auto"
    launcher_options: str = ""
    slots_per_node: int | None = None


class ManagerOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Everything a manager is started with."""

    interchange: str  # tcp://HOST:PORT of the interchange's ROUTER ("inline": none)
    block_id: str = ""
    manager_id: str = ""  # "": the manager makes one (a block's nodes run one command)
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
    prefetch: Annotated[int, msgspec.Meta(ge=0)] = 0
    heartbeat_period_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    heartbeat_threshold_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    max_result_bytes: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_MAX_RESULT_BYTES
    drain_at: float | None = None  # wall-clock time: take no tasks from then on (walltime)
    credentials: str | None = None  # the file the endpoint wrote for its managers (linkauth)
    sandbox: SandboxSpec | None = None  # workers in bubblewrap (sandbox); None: forked
    mpi: MPIPool | None = None  # None: no MPI tasks
    container: ContainerSpec | None = None  # workers in a container; None: forked
    task_dir: TaskDirSpec | None = None  # each task in a fresh folder; None: the worker's

    def worker_args(self, index: int) -> list[str]:
        """What an exec'd worker (sandbox, container) is told on its command line."""
        args = ["--max-result-bytes", str(self.max_result_bytes), "--index", str(index)]
        if self.task_dir is not None:
            args += ["--task-dir", msgspec.json.encode(self.task_dir).decode()]
        return args

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str) -> ManagerOptions:
        try:
            return msgspec.json.decode(text, type=cls)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise ConfigError(f"--options is not a manager's options document: {exc}") from exc

    def command(self, python: str = sys.executable) -> str:
        """The shell command that starts a manager with these options."""
        return shlex.join([python, "-m", MANAGER_MODULE, "--options", self.to_json()])


@dataclass(frozen=True)
class LaunchPlan:
    """What every manager of this run of the endpoint shares; ``options`` makes one
    block's document (immutable: the scaler thread and the loop both use it)."""

    interchange: str
    workers: int
    prefetch: int
    heartbeat_period_s: float
    heartbeat_threshold_s: float
    credentials: str | None = None
    sandbox: SandboxSpec | None = None
    runs_for_s: float | None = None  # batch blocks: walltime less the margin; None: no end
    mpi: MPIPool | None = None
    container: ContainerSpec | None = None
    task_dir: TaskDirSpec | None = None

    def options(self, block_id: str, max_result_bytes: int, now: float) -> ManagerOptions:
        """``now``: wall-clock time of the block's submission (its walltime starts then)."""
        drain_at = None if self.runs_for_s is None else float(int(now + self.runs_for_s))
        return ManagerOptions(
            interchange=self.interchange, block_id=block_id, workers=self.workers,
            prefetch=self.prefetch, heartbeat_period_s=self.heartbeat_period_s,
            heartbeat_threshold_s=self.heartbeat_threshold_s,
            max_result_bytes=max_result_bytes, drain_at=drain_at,
            credentials=self.credentials, sandbox=self.sandbox, mpi=self.mpi,
            container=self.container, task_dir=self.task_dir)
