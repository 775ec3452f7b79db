"""The block's nodes, lent to MPI tasks: which nodes, which launcher, who holds what.

On an endpoint with an ``mpi:`` section, a block runs one manager (it owns all
the block's nodes) and that manager's workers run the MPI tasks' launchers::

    manager (lead node) --env: pool file, nodes and slots, launcher--> workers
    worker running an MPI task: claim(request) --flock--> pool file {node: slots in use}
                                 $FUNCX_FLOWS_MPI_PREFIX = "srun --nodes=.. --nodelist=.."
                                 ... the call runs ...
                                 release(placement) --flock--> pool file

The claim is taken under an exclusive ``flock`` of a file on the lead node's own
disk (every worker of the block is there), so two workers never lend the same
slots; several MPI tasks share a block when their slots fit side by side, and a
task whose slots are taken waits, holding its worker, until they come back. A
request no block can ever hold (more nodes than the block has, more ranks per
node than a node's slots) fails at once: at the agent when the config says so
(``refusal``), else at the worker, before anything runs.

Workers are forked processes, so all of this travels in their environment. A
claim is recorded under the worker's pid; a worker that dies mid-task (a cancel
kills it) cannot lend its slots back, so a claim whose pid is gone is dropped by
the next claim. (Workers in a bubblewrap sandbox have a private /tmp and pid
namespace: the config refuses ``mpi`` with ``sandbox: bwrap``.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funcx_flows.errors import CommandError
from funcx_flows.mpi import PREFIX_ENV, MPIRequest

POOL_ENV = "FUNCX_FLOWS_MPI_POOL"  # the pool file
NODES_ENV = "FUNCX_FLOWS_MPI_NODES"  # host:slots,host:slots
LAUNCHER_ENV = "FUNCX_FLOWS_MPI_LAUNCHER"
OPTIONS_ENV = "FUNCX_FLOWS_MPI_LAUNCHER_OPTIONS"
HOSTS_ENV = "FUNCX_FLOWS_MPI_HOSTS"  # what a task was given: host:ranks,...
PARSL_PREFIX_ENV = "PARSL_MPI_PREFIX"  # the same, named as Globus Compute's MPIFunction reads it
WAIT_S = 0.05  # how often a waiting claim looks again


def block_nodes() -> list[str]:
    """The hosts of the block this process runs in: Slurm's node list, PBS's node
    file, or this host alone."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if nodelist and shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist],
                             capture_output=True, text=True, timeout=60, check=False)
        hosts = out.stdout.split()
        if out.returncode == 0 and hosts:
            return hosts
    nodefile = os.environ.get("PBS_NODEFILE")
    if nodefile and os.path.exists(nodefile):
        hosts = list(dict.fromkeys(Path(nodefile).read_text().split()))
        if hosts:
            return hosts
    return [socket.gethostname()]


def pick_launcher(launcher: str) -> str:
    """``auto``: srun inside a Slurm allocation, else mpiexec."""
    if launcher != "auto":
        return launcher
    return "srun" if os.environ.get("SLURM_JOB_ID") and shutil.which("srun") else "mpiexec"


def pool_environment(launcher: str, launcher_options: str, slots_per_node: int | None,
                     name: str) -> tuple[dict[str, str], Path]:
    """What the manager gives its workers, and the pool file it made for them."""
    slots = slots_per_node or int(os.environ.get("SLURM_CPUS_ON_NODE") or 0) \
        or os.cpu_count() or 1
    nodes = block_nodes()
    fd, path = tempfile.mkstemp(prefix=f"funcx-mpi-{name}-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({}, f)
    return ({POOL_ENV: path, NODES_ENV: ",".join(f"{h}:{slots}" for h in nodes),
             LAUNCHER_ENV: pick_launcher(launcher), OPTIONS_ENV: launcher_options},
            Path(path))


@dataclass(frozen=True)
class Placement:
    """Ranks lent to one task, by host (in the block's order)."""

    ranks: dict[str, int]

    @property
    def hosts(self) -> str:
        return ",".join(f"{h}:{n}" for h, n in self.ranks.items())


class NodePool:
    """The block's slots, as the workers of its manager see them (see the docstring)."""

    def __init__(self, path: str, nodes: Mapping[str, int]) -> None:
        self.path = path
        self.nodes = dict(nodes)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> NodePool | None:
        path, nodes = environ.get(POOL_ENV), environ.get(NODES_ENV)
        if not path or not nodes:
            return None
        slots = {}
        for item in nodes.split(","):
            host, _, count = item.rpartition(":")
            slots[host] = int(count)
        return cls(path, slots)

    def never_fits(self, req: MPIRequest) -> str:
        """Why no moment of this block can hold ``req`` ('' when one can)."""
        most = max(self.nodes.values())
        if req.num_nodes is not None and req.num_nodes > len(self.nodes):
            return f"it asks for {req.num_nodes} nodes; a block has {len(self.nodes)}"
        if req.ranks_per_node is not None and req.ranks_per_node > most:
            return (f"it asks for {req.ranks_per_node} ranks per node; a node of the block "
                    f"has {most} slots")
        if req.num_nodes is not None:
            room = sum(sorted(self.nodes.values(), reverse=True)[:req.num_nodes])
            if req.num_ranks > room:
                return (f"it asks for {req.num_ranks} ranks on {req.num_nodes} nodes; they "
                        f"have {room} slots")
        if req.num_ranks > sum(self.nodes.values()):
            return (f"it asks for {req.num_ranks} ranks; the block has "
                    f"{sum(self.nodes.values())} slots")
        return ""

    def _fit(self, req: MPIRequest, used: Mapping[str, int]) -> Placement | None:
        free = {h: n - used.get(h, 0) for h, n in self.nodes.items()}
        if req.ranks_per_node is not None:
            hosts = [h for h, n in free.items() if n >= req.ranks_per_node]
            assert req.num_nodes is not None
            if len(hosts) < req.num_nodes:
                return None
            return Placement({h: req.ranks_per_node for h in hosts[:req.num_nodes]})
        # num_ranks, on num_nodes hosts or as few as hold them: the freest hosts first
        order = sorted((h for h in free if free[h] > 0), key=lambda h: -free[h])
        count = req.num_nodes or next(
            (k for k in range(1, len(order) + 1)
             if sum(free[h] for h in order[:k]) >= req.num_ranks), 0)
        chosen = order[:count]
        if not count or len(chosen) < count or sum(free[h] for h in chosen) < req.num_ranks:
            return None
        ranks = dict.fromkeys(chosen, 1)  # one on each, then fill the freest
        left = req.num_ranks - count
        for h in chosen:
            more = min(left, free[h] - 1)
            ranks[h] += more
            left -= more
        return Placement({h: ranks[h] for h in self.nodes if h in ranks})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                text = f.read()
                state: dict[str, Any] = json.loads(text) if text else {}
                yield state
                f.seek(0)
                f.truncate()
                json.dump(state, f)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def try_claim(self, req: MPIRequest, owner: int) -> Placement | None:
        with self._locked() as state:
            for pid in [p for p in state if not _alive(int(p))]:
                del state[pid]  # its worker died mid-task
            used: dict[str, int] = {}
            for claim in state.values():
                for h, n in claim.items():
                    used[h] = used.get(h, 0) + n
            placement = self._fit(req, used)
            if placement is not None:
                state[str(owner)] = placement.ranks
            return placement

    def release(self, owner: int) -> None:
        with self._locked() as state:
            state.pop(str(owner), None)

    @contextlib.contextmanager
    def lend(self, req: MPIRequest) -> Iterator[Placement]:
        """Wait for ``req``'s slots, hold them for the block of the ``with``."""
        why = self.never_fits(req)
        if why:
            raise CommandError(f"this MPI task can never run on this endpoint: {why}")
        owner = os.getpid()
        while (placement := self.try_claim(req, owner)) is None:
            time.sleep(WAIT_S)
        try:
            yield placement
        finally:
            self.release(owner)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def launcher_prefix(launcher: str, options: str, placement: Placement) -> str:
    """The launcher's command line that starts the ranks on exactly ``placement``."""
    n = sum(placement.ranks.values())
    hosts = list(placement.ranks)
    if launcher == "srun":
        # --overlap: the manager's own step (if any) holds the allocation's CPUs
        args = ["srun", "--overlap", f"--nodes={len(hosts)}", f"--ntasks={n}",
                f"--nodelist={','.join(hosts)}"]
        if len(set(placement.ranks.values())) == 1:  # (else the block's own may clash)
            args.append(f"--ntasks-per-node={n // len(hosts)}")
    elif launcher == "mpirun":  # Open MPI
        args = ["mpirun", "-np", str(n), "--host", placement.hosts]
    else:  # MPICH's (hydra) mpiexec
        args = ["mpiexec", "-n", str(n), "-hosts", placement.hosts]
    return shlex.join(args) + (f" {options}" if options else "")


@contextlib.contextmanager
def task_placement(resources: Any) -> Iterator[None]:
    """Around one call on a worker: when the task asks for MPI resources, its nodes
    claimed and ``$FUNCX_FLOWS_MPI_PREFIX`` set (and ``$PARSL_MPI_PREFIX``, the one
    Globus Compute's own ``MPIFunction`` puts before its command); otherwise nothing."""
    req = MPIRequest.from_resources(resources) if resources is not None else None
    if req is None:
        yield
        return
    pool = NodePool.from_environment()
    if pool is None:
        raise CommandError("this task asks for MPI resources, but the endpoint has no "
                           "mpi: section in its config (no nodes are lent to MPI tasks)")
    with pool.lend(req) as placement:
        prefix = launcher_prefix(os.environ.get(LAUNCHER_ENV, "mpiexec"),
                                 os.environ.get(OPTIONS_ENV, ""), placement)
        os.environ[PREFIX_ENV] = prefix
        os.environ[PARSL_PREFIX_ENV] = prefix
        os.environ[HOSTS_ENV] = placement.hosts
        try:
            yield
        finally:
            for name in (PREFIX_ENV, PARSL_PREFIX_ENV, HOSTS_ENV):
                os.environ.pop(name, None)


def refusal(resources: Any, has_mpi: bool, nodes_per_block: int,
            slots_per_node: int | None) -> str:
    """Why the agent refuses a task at once ('' when it does not): an MPI request
    on an endpoint without MPI, or one larger than its blocks."""
    try:
        req = MPIRequest.from_resources(resources) if resources is not None else None
    except CommandError as exc:
        return exc.message
    if req is None:
        return ""
    if not has_mpi:
        return ("this task asks for MPI resources, but the endpoint has no mpi: section in "
                "its config")
    if req.num_nodes is not None and req.num_nodes > nodes_per_block:
        return (f"this MPI task can never run on this endpoint: it asks for {req.num_nodes} "
                f"nodes; a block has {nodes_per_block} (nodes_per_block)")
    if slots_per_node is not None:
        pool = NodePool("", {str(i): slots_per_node for i in range(nodes_per_block)})
        why = pool.never_fits(req)
        if why:
            return f"this MPI task can never run on this endpoint: {why} (mpi.slots_per_node)"
    return ""
