"""Workers inside a container: the endpoint's ``container:`` section.

With ``container: {type: podman, image: IMAGE, options: [...]}`` each worker is
exec'd (not forked) inside a container of IMAGE, and talks to its manager over
the same pipe as a forked one (a socket pair)::

    podman      passed in as descriptor 3:
                bash -c 'exec "$@" 3<&N' podman run --rm --preserve-fds=1
                --name funcx-worker-<manager>-<i> OPTIONS IMAGE
                python3 -m funcx_flows.endpoint.worker --fd 3

    docker      as the container's standard input and output (docker run cannot
                pass a descriptor; its client relays -i's streams byte for byte):
                docker run -i --rm --name funcx-worker-<manager>-<i> OPTIONS IMAGE
                python3 -m funcx_flows.endpoint.worker --stdio
                (the worker moves the pipe off descriptors 0 and 1 at once, so
                that what a task prints cannot reach it)

    apptainer / singularity exec OPTIONS IMAGE python3 -m ... --fd N
                (no namespaces of their own by default: the descriptor
                is inherited as it is)

The image must hold a Python of the client's minor version with funcx-flows
(and msgspec, cloudpickle) importable as ``python`` (default ``python3``): the
worker runs the task and imports nothing else. Podman on cgroups v1 hosts needs
``runc`` and explicit ulimits (``containers.conf``; docs/pilots.md). Docker's
client finds its daemon as it always does (``DOCKER_HOST``).

A killed worker (a cancel, the walltime, the manager stopping) is its container
removed (``podman rm -f`` / ``docker rm -f``): killing the engine's client alone
would leave the container running. A stopping manager also removes every
container named after it (``remove_containers``), one an engine was still
creating included.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from multiprocessing.connection import Connection

from funcx_flows.endpoint.sandbox import WORKER_MODULE, ExecWorker
from funcx_flows.errors import ConfigError

ENGINES = ("podman", "docker", "apptainer", "singularity")
NAMED = ("podman", "docker")  # engines whose containers outlive a killed client
WORKER_FD = 3  # where podman's --preserve-fds=1 puts the pipe
INSTALL = {"podman": "podman runc", "docker": "docker.io"}
# remove a container now, killing what runs in it (podman would first wait its stop
# timeout, 10 s; docker's rm -f kills at once)
RM_NOW = {"podman": ("rm", "-f", "-t", "0"), "docker": ("rm", "-f")}


@dataclass(frozen=True)
class ContainerSpec:
    """How workers are started in a container (validated by the endpoint config)."""

    type: str  # podman | docker | apptainer | singularity
    image: str  # "": the endpoint's workers run on the host; tasks' own images only
    options: tuple[str, ...] = ()
    python: str = "python3"
    max_warm: int = 2  # containers of tasks' own images a manager keeps (warmpool.py)

    def check(self) -> None:
        """Refuse at start what would fail at every worker: no engine, no image."""
        if self.type not in ENGINES:
            raise ConfigError(f"container.type: {self.type!r} is not one of "
                              f"{', '.join(ENGINES)}")
        if shutil.which(self.type) is None:
            raise ConfigError(f"container: the {self.type} program is not on PATH" + (
                f" (Debian: apt-get install {INSTALL[self.type]})" if self.type in INSTALL
                else ""))
        if self.image:
            missing = self.image_missing(self.image)
            if missing:
                raise ConfigError(f"container.image: {missing}")

    def image_missing(self, image: str) -> str:
        """Why the engine cannot start ``image`` ("" when it can, as far as one can
        tell before starting it: podman and docker are asked, an apptainer image is a
        file or a URI)."""
        if self.type not in NAMED:
            return ("" if "://" in image or os.path.exists(image)
                    else f"{self.type} has no image file {image!r}")
        # (docker has no "image exists"; inspect says the same, and that the daemon
        # answers)
        found = subprocess.run([self.type, "image", "inspect", "--format", "{{.Id}}", image],
                               capture_output=True, text=True, timeout=120, check=False)
        if found.returncode == 0:
            return ""
        why = found.stderr.strip().splitlines()[-1:] or [""]
        return (f"{self.type} has no image {image!r} ({self.type} pull or {self.type} "
                "import it first)" + (f": {why[0]}" if why[0] else ""))

    def argv(self, name: str, fd: int, worker_args: list[str]) -> list[str]:
        """The engine's command line for one worker whose pipe is descriptor ``fd``."""
        command = [self.python, "-m", WORKER_MODULE, *worker_args]
        if self.type == "podman":
            return ["bash", "-c", f'exec "$@" {WORKER_FD}<&{fd} {fd}<&-', "bash",
                    "podman", "run", "--rm", f"--preserve-fds={WORKER_FD - 2}",
                    "--name", name, *self.options, self.image,
                    *command, "--fd", str(WORKER_FD)]
        if self.type == "docker":  # the pipe is the client's stdin and stdout
            return ["docker", "run", "-i", "--rm", "--name", name, *self.options, self.image,
                    *command, "--stdio"]
        return [self.type, "exec", *self.options, self.image, *command, "--fd", str(fd)]


IMAGE_NAME = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:@+-]*")  # never an engine option


def image_refusal(resources: object, engine: ContainerSpec | None) -> str:
    """Why an endpoint cannot take a task that asks for a container image of its own
    ("" when it can, or when the task asks for none)."""
    image = getattr(resources, "container_image", None)
    if image is None:
        return ""
    if not IMAGE_NAME.fullmatch(image):
        return f"container_image {image!r} is not an image name"
    if engine is None:
        return (f"the task asks for the container image {image!r}, but this endpoint "
                "runs no container engine (its config has no container: section, e.g. "
                "container: {type: podman})")
    return ""


def parse_options(text: str | list[str]) -> tuple[str, ...]:
    """``options`` as a string (split as a shell would) or a list."""
    return tuple(shlex.split(text) if isinstance(text, str) else text)


class ContainerWorker:
    """A worker in a container, answering the manager as ``ExecWorker`` does; killing
    it removes the container."""

    def __init__(self, popen: subprocess.Popen[bytes], engine: str, name: str) -> None:
        self.exec = ExecWorker(popen)
        self.engine = engine
        self.name = name

    @property
    def sentinel(self) -> int:
        fd: int = self.exec.sentinel
        return fd

    @property
    def pid(self) -> int:
        pid: int = self.exec.pid
        return pid

    @property
    def exitcode(self) -> int | None:
        code: int | None = self.exec.exitcode
        return code

    def is_alive(self) -> bool:
        alive: bool = self.exec.is_alive()
        return alive

    def join(self, timeout: float | None = None) -> None:
        self.exec.join(timeout)

    def kill(self) -> None:
        self.exec.kill()
        if self.engine in NAMED:
            subprocess.run([self.engine, *RM_NOW[self.engine], self.name],
                           capture_output=True, timeout=60, check=False)


def start_container_worker(spec: ContainerSpec, name: str, worker_args: list[str]
                           ) -> tuple[ContainerWorker, Connection]:
    """A worker in a container of ``spec.image``, and the manager's end of its pipe
    (``worker_args``: ManagerOptions.worker_args)."""
    ours, theirs = socket.socketpair()
    try:
        fd = theirs.fileno()
        argv = spec.argv(name, fd, worker_args)
        # a session of its own: a signal to the manager's process group (the endpoint
        # stopping) must not cut an engine short while it creates a container
        docker = spec.type == "docker"  # its client's stdin and stdout are the pipe
        popen = subprocess.Popen(argv, pass_fds=(fd,),
                                 stdin=fd if docker else subprocess.DEVNULL,
                                 stdout=fd if docker else None, start_new_session=True)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ContainerWorker(popen, engine=spec.type, name=name), Connection(ours.detach())


def remove_containers(spec: ContainerSpec, prefix: str) -> None:
    """Remove the containers whose names start with ``prefix`` (a manager's, at its end)."""
    if spec.type not in NAMED:
        return
    found = subprocess.run([spec.type, "ps", "-a", "-q", "--filter", f"name=^{prefix}"],
                           capture_output=True, text=True, timeout=60, check=False)
    ids = found.stdout.split()
    if ids:
        subprocess.run([spec.type, *RM_NOW[spec.type], *ids], capture_output=True,
                       timeout=120, check=False)
