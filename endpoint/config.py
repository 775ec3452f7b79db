"""The endpoint's configuration: one validated model, loaded from ``config.yaml``.

Field names follow Globus Compute / Parsl endpoint configs so that their users
feel at home. Unknown keys are refused (a typo must not silently fall back to a
default on a supercomputer allocation), and every problem is reported as a
``ConfigError`` that names the key.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from funcx_flows.endpoint import gcconfig
from funcx_flows.endpoint.providers.registry import PROVIDER_NAMES, is_batch
from funcx_flows.errors import ConfigError

log = logging.getLogger(__name__)

# the names registry.py declares: mypy sees a str, pydantic checks the names
if TYPE_CHECKING:
    ProviderName = str
else:
    ProviderName = Literal[PROVIDER_NAMES]
LAUNCHERS = ("single", "srun", "mpirun", "mpiexec", "aprun", "jsrun")


class MPIConfig(BaseModel):
    """``mpi:``: the endpoint runs MPI tasks (funcx_flows/mpi.py, endpoint/mpi.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # auto: srun inside a Slurm allocation, else mpiexec (MPICH); mpirun: Open MPI
    launcher: Literal["auto", "srun", "mpiexec", "mpirun"] = "auto"
    launcher_options: str = ""  # put after the launcher, e.g. "--mpi=pmi2"
    # ranks a node takes at once, over all tasks (blank: its cores)
    slots_per_node: int | None = Field(None, ge=1)


class ContainerConfig(BaseModel):
    """``container:``: workers run inside a container (endpoint/container.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["podman", "docker", "apptainer", "singularity"]
    # the workers' image; blank: workers run on the host, and the engine runs only the
    # images tasks ask for (resources={"container_image": ...})
    image: str = ""
    options: str | list[str] = ""  # put before the image: "--network none -v /data:/data"
    python: str = "python3"  # the image's Python, with funcx-flows importable
    # containers of tasks' own images a manager keeps warm at most (per node); the
    # least recently used idle one is stopped to start another image
    max_warm: int = Field(2, ge=1, le=1024)


class TaskDirConfig(BaseModel):
    """``task_dir:``: each task runs in a fresh folder of its own (endpoint/taskdir.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str = ""  # where the folders go (blank: the node's temporary folder, $TMPDIR)
    keep_on_failure: bool = False  # a failed task's folder stays (its error says where)

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        path = os.path.expandvars(os.path.expanduser(value))
        if value and not os.path.isabs(path):
            raise ValueError(f"{value!r} is not an absolute path")
        return path


class EndpointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    display_name: str = ""
    # Where the service is; empty means the local service recorded in the home folder.
    service_url: str = ""
    # How the endpoint reaches the service: auto = a WebSocket on the service's own
    # port when service_url is https:// (through proxies and firewalls that pass only
    # HTTPS), else ZeroMQ (a second port, CurveZMQ).
    link: Literal["auto", "zmq", "websocket"] = "auto"

    # --- pilots (blocks) ---
    provider: ProviderName = "local"
    queue: str = ""
    account: str = ""
    walltime: str = "00:30:00"
    nodes_per_block: int = Field(1, ge=1)
    init_blocks: int = Field(1, ge=0)
    # Blank: 1 for the local provider (keep workers ready), 0 on a batch scheduler
    # (release the allocation when idle).
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    max_workers_per_node: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    worker_init: str = ""
    launcher: Literal["single", "srun", "mpirun", "mpiexec", "aprun", "jsrun"] = "single"
    scheduler_options: str = ""
    custom_attributes: dict[str, str] = Field(default_factory=dict)
    idle_timeout: float = Field(120.0, ge=0)
    strategy_period: float = Field(5.0, gt=0)
    status_poll_interval: float = Field(10.0, gt=0)
    # The address compute nodes use to reach the interchange (blank: this host's).
    interchange_address: str = "127.0.0.1"
    # How managers prove they are this endpoint's (see linkauth): auto = password on
    # the loopback interface, CurveZMQ (encrypted) where nodes reach it over a network.
    manager_auth: Literal["auto", "curve", "password"] = "auto"
    # Stop taking tasks this many seconds before a block's walltime ends.
    walltime_margin_s: float = Field(60.0, ge=0)
    # Workers in a bubblewrap sandbox (endpoint/sandbox.py): a private HOME, the
    # funcx-flows home (tokens, keys) hidden. For endpoints shared with others.
    sandbox: Literal["none", "bwrap"] = "none"
    sandbox_hide: list[str] = Field(default_factory=list)  # more paths tasks must not see
    sandbox_keep: list[str] = Field(default_factory=list)  # paths under HOME tasks may use
    # MPI tasks: a block's one manager lends its nodes to them (blank: no MPI)
    mpi: MPIConfig | None = None
    # Workers inside a container of this image (blank: on the endpoint's own Python)
    container: ContainerConfig | None = None
    # Each task in a fresh working folder, removed after it (blank: the worker's own)
    task_dir: TaskDirConfig | None = None

    # --- reliability ---
    heartbeat_period_s: float = Field(2.0, gt=0)
    heartbeat_threshold_s: float = Field(10.0, gt=0)
    max_retries_on_system_failure: int = Field(0, ge=0)
    # Function ids this endpoint agrees to run; empty means any of its owner's.
    allowed_functions: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_min_blocks(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("min_blocks") is None:
            provider = data.get("provider", "local")
            batch = provider in PROVIDER_NAMES and is_batch(provider)
            data = {**data, "min_blocks": 0 if batch else 1}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EndpointConfig:
        if self.min_blocks > self.max_blocks:
            raise ValueError("min_blocks must not exceed max_blocks")
        if self.init_blocks > self.max_blocks:
            raise ValueError("init_blocks must not exceed max_blocks")
        if self.heartbeat_threshold_s <= self.heartbeat_period_s:
            raise ValueError("heartbeat_threshold_s must be larger than heartbeat_period_s")
        if self.mpi is not None and self.launcher != "single":
            raise ValueError("mpi: a block runs one manager, which lends the block's nodes "
                             "to MPI tasks; set launcher: single (not "
                             f"{self.launcher})")
        if self.container is not None and (self.sandbox != "none" or self.mpi is not None):
            raise ValueError("container goes with neither sandbox: bwrap (the container "
                             "is the sandbox) nor mpi yet")
        if self.mpi is not None and self.sandbox != "none":
            raise ValueError("mpi and sandbox: bwrap do not go together yet (sandboxed "
                             "workers cannot share the block's node pool)")
        return self

    @field_validator("task_dir", mode="before")
    @classmethod
    def _task_dir_switch(cls, value: Any) -> Any:
        """``task_dir: true`` is the defaults; ``false`` is none."""
        if isinstance(value, bool):
            return {} if value else None
        return value

    @field_validator("sandbox_hide", "sandbox_keep")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not os.path.isabs(os.path.expanduser(path)):
                raise ValueError(f"{path!r} is not an absolute path")
        return [os.path.expanduser(p) for p in paths]

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime_seconds(cls, value: Any) -> Any:
        """An int is seconds: what YAML makes of an unquoted ``1:00:00`` (3600, base
        60) or of ``walltime: 3600``."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value <= 0:
                raise ValueError("walltime must be positive")
            return f"{value // 3600:02d}:{value % 3600 // 60:02d}:{value % 60:02d}"
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if walltime_seconds(value) <= 0:
            raise ValueError("walltime must be positive")
        return value


def walltime_seconds(text: str) -> int:
    """``[[D-]HH:]MM:SS`` or ``HH:MM:SS`` (as schedulers write it) in seconds."""
    days = 0
    body = text.strip()
    if "-" in body:
        d, body = body.split("-", 1)
        days = int(d)
    try:
        parts = [int(p) for p in body.split(":")]
    except ValueError:
        raise ValueError(f"walltime {text!r} is not [D-]HH:MM:SS") from None
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
        raise ValueError(f"walltime {text!r} is not [D-]HH:MM:SS")
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return days * 86400 + h * 3600 + m * 60 + s


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            hint = gcconfig.equivalent(str(err["loc"][-1])) if err["loc"] else None
            msg = f"unknown key ({hint})" if hint else \
                "unknown key (check the spelling; see `funcx-endpoint configure`)"
        lines.append(f"  {key}: {msg}")
    return f"invalid endpoint config {source}:\n" + "\n".join(lines)


def parse_config(data: Any, source: str = "") -> EndpointConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid endpoint config {source}: expected a mapping of keys")
    if gcconfig.is_globus_compute(data):
        translated = gcconfig.translate(data, source)
        for note in translated.dropped:
            log.warning("Globus Compute config %s: %s", source, note)
        data = translated.config
    try:
        return EndpointConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    except ValueError as exc:  # walltime parsing inside validators
        raise ConfigError(f"invalid endpoint config {source}: {exc}") from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"no config at {path}; create one with `funcx-endpoint configure`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def load_config(path: Path) -> EndpointConfig:
    return parse_config(_read_yaml(path), str(path))


def translated_config_text(path: Path) -> str:
    """Our config.yaml for a Globus Compute endpoint's, checked, with the keys that
    were dropped (and why) as comments on top."""
    data = _read_yaml(path)
    if not gcconfig.is_globus_compute(data):
        raise ConfigError(f"{path} is not a Globus Compute endpoint config (it has no "
                          "engine: section)")
    translated = gcconfig.translate(data, str(path))
    parse_config(translated.config, f"translated from {path}")
    head = [f"# translated from the Globus Compute config {path}"]
    head += [f"# {note}" for note in translated.dropped]
    return "\n".join(head) + "\n" + yaml.safe_dump(translated.config, sort_keys=False)


DEFAULT_CONFIG = """\
# funcx-flows endpoint configuration. Every key is optional; unknown keys are refused.

# display_name: ""
# service_url: ""            # blank: the local service in FUNCX_FLOWS_HOME
# link: auto                 # auto | zmq | websocket (auto: websocket for https:// URLs,
                             # one port through proxies and firewalls; else ZeroMQ)

# Where workers run: local | inline | slurm | pbs | lsf | flux | cobalt
# (local: a manager process per block; inline: workers forked by the endpoint
# itself, the lowest latency on one host; the rest: pilot jobs through PSI/J)
provider: local
# queue: ""                  # partition / queue
# account: ""                # allocation / project
# walltime: "00:30:00"       # per pilot job (block); an int is seconds
# nodes_per_block: 1
# init_blocks: 1
# min_blocks:                # blank: 1 for local, 0 on a batch scheduler
# max_blocks: 1
# max_workers_per_node: {workers}
# worker_init: ""            # shell lines run before the manager starts (module load ...)
# launcher: single           # single | srun | mpirun | mpiexec | aprun | jsrun
# scheduler_options: ""      # extra #SBATCH/#PBS lines
# custom_attributes: {{}}      # PSI/J custom attributes, e.g. slurm.constraint: knl
# idle_timeout: 120          # seconds a block may sit idle before it is released
# strategy_period: 5
# status_poll_interval: 10   # how often the scheduler is asked about blocks
# interchange_address: 127.0.0.1   # address compute nodes use to reach this host
# manager_auth: auto         # auto | curve | password: how managers prove they are ours
                             # (auto: password on 127.0.0.1, CurveZMQ over a network)
# walltime_margin_s: 60      # stop taking tasks this long before walltime ends
# sandbox: none              # none | bwrap: workers see a private HOME, and neither the
                             # funcx-flows home (tokens, keys) nor sandbox_hide paths
# sandbox_hide: []           # more paths tasks must not see
# sandbox_keep: []           # paths under HOME that tasks may still use
# mpi:                       # run MPIFunction tasks; a block's nodes are lent to them
#   launcher: auto           # auto (srun in Slurm, else mpiexec) | srun | mpiexec | mpirun
#   launcher_options: ""     # e.g. "--mpi=pmi2"
#   slots_per_node:          # ranks a node runs at once (blank: its cores)
# container:                 # run workers inside a container
#   type: podman             # podman | apptainer | singularity
#   image: localhost/analysis:1   # must hold python3 with funcx-flows (blank: workers
                             # on the host; tasks' own images still run in containers)
#   options: "--network none -v /data:/data"
#   python: python3
#   max_warm: 2              # containers of tasks' own images kept per node
# task_dir:                  # each task in a fresh working folder, removed after it
#   root: ""                 # where the folders go (blank: $TMPDIR or /tmp); must exist
#   keep_on_failure: false   # keep a failed task's folder (its error says where)

# heartbeat_period_s: 2
# heartbeat_threshold_s: 10
# max_retries_on_system_failure: 0   # retries when a worker, manager or block dies
# allowed_functions: []      # function ids this endpoint runs; empty: any of yours
"""


def default_config_text() -> str:
    return DEFAULT_CONFIG.format(workers=os.cpu_count() or 1)
