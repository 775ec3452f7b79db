"""MPI applications as functions: ``MPIFunction(cmd)`` runs a command under the block's launcher.

A task asks for its MPI resources with the call (``Executor(resources=...)`` or
``submit_to_registered_function(..., resources=...)``)::

    {"num_nodes": 2, "ranks_per_node": 4}    8 ranks, 4 on each of 2 nodes
    {"num_ranks": 6}                         6 ranks on as few nodes as hold them
    {"num_nodes": 2, "num_ranks": 6}         6 ranks spread over 2 nodes

On an endpoint with an ``mpi:`` section, the worker that runs the task claims
those nodes (and slots on them) from its block before the call, and lends them
back after; meanwhile ``$FUNCX_FLOWS_MPI_PREFIX`` holds the launcher's command
line for exactly that placement (``srun --nodes=2 --ntasks=8 --nodelist=...``
inside a Slurm allocation, ``mpiexec -n 8 -hosts a:4,b:4`` otherwise).
``MPIFunction`` puts it before the command; a ``ShellFunction`` or a Python
function may use it too. Only the command's first program runs under the
launcher (``{prefix} {cmd}``): use a script for a pipeline of steps.

``MPIRequest.from_resources`` is the one reading of those fields, shared by the
service (which refuses a contradictory request at submission), the endpoint
(which refuses one no block of it can hold) and the worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from funcx_flows.errors import CommandError
from funcx_flows.shell import ShellFunction, ShellResult

PREFIX_ENV = "FUNCX_FLOWS_MPI_PREFIX"
MPI_FIELDS = ("num_nodes", "ranks_per_node", "num_ranks")


@dataclass(frozen=True)
class MPIRequest:
    """A task's MPI resources, made whole: ``num_nodes`` is None when the placement
    may choose (fewest nodes that hold ``num_ranks``); ``ranks_per_node`` is None when
    the ranks need not be even across nodes."""

    num_ranks: int
    num_nodes: int | None = None
    ranks_per_node: int | None = None

    @classmethod
    def from_resources(cls, resources: Mapping[str, Any] | Any) -> MPIRequest | None:
        """The MPI request in a task's resources (a mapping or a ``ResourceSpec``);
        None when it asks for no MPI. A ``CommandError`` says what contradicts."""
        get = resources.get if isinstance(resources, Mapping) else (
            lambda key: getattr(resources, key, None))
        nodes, per_node, ranks = (get(key) for key in MPI_FIELDS)
        if nodes is None and per_node is None and ranks is None:
            return None
        for key, value in zip(MPI_FIELDS, (nodes, per_node, ranks), strict=True):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise CommandError(f"resources: {key} must be a whole number of 1 or more, "
                                   f"not {value!r}")
        if per_node is not None:
            nodes = nodes or 1
            if ranks is not None and ranks != nodes * per_node:
                raise CommandError(
                    f"resources: num_ranks={ranks} contradicts num_nodes={nodes} x "
                    f"ranks_per_node={per_node} (= {nodes * per_node}); give two of them")
            return cls(num_ranks=nodes * per_node, num_nodes=nodes, ranks_per_node=per_node)
        if ranks is None:
            raise CommandError(f"resources: num_nodes={nodes} needs ranks_per_node or "
                               "num_ranks (how many ranks to start)")
        if nodes is not None and ranks < nodes:
            raise CommandError(f"resources: num_ranks={ranks} is fewer than num_nodes="
                               f"{nodes}: every node needs a rank")
        return cls(num_ranks=ranks, num_nodes=nodes)


class MPIFunction(ShellFunction):
    """A command run under the block's MPI launcher, on the nodes the task was given
    (see the module docstring). The options are ``ShellFunction``'s."""

    def __call__(self, *args: Any, **kwargs: Any) -> ShellResult:
        command = self.format(args, kwargs)
        prefix = os.environ.get(PREFIX_ENV)
        if not prefix:
            raise CommandError(
                "this MPIFunction call was given no nodes: submit it with MPI resources "
                "(resources={'num_nodes': N, 'ranks_per_node': R} or {'num_ranks': N}) to "
                "an endpoint whose config has an mpi: section")
        return self.run(f"{prefix} {command}")
