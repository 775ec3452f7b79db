"""funcx-flows: Prefect tasks that run on a federated network of endpoints.

Importing this package is cheap: the SDK and the Prefect integration load on
first use, so that workers and managers that import ``funcx_flows.serialize``
or ``funcx_flows.messages`` never pull in httpx or Prefect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "funcx_flows.sdk.client",
    "Executor": "funcx_flows.sdk.executor",
    "remote_task": "funcx_flows.prefect",
    "remote_map": "funcx_flows.prefect",
    "EndpointTaskRunner": "funcx_flows.prefect",
    "transfer": "funcx_flows.prefect",
    "ShellFunction": "funcx_flows.shell",
    "ShellResult": "funcx_flows.shell",
    "MPIFunction": "funcx_flows.mpi",
    "GlobusComputeEndpoint": "funcx_flows.globus_compute",
}

if TYPE_CHECKING:  # typed for type checkers; imported on first use at run time
    from funcx_flows.globus_compute import GlobusComputeEndpoint
    from funcx_flows.prefect.batch import remote_map
    from funcx_flows.prefect.runner import EndpointTaskRunner
    from funcx_flows.prefect.task import remote_task
    from funcx_flows.prefect.transfer import transfer
    from funcx_flows.sdk.client import Client
    from funcx_flows.sdk.executor import Executor

__all__ = ["Client", "EndpointTaskRunner", "Executor", "GlobusComputeEndpoint", "__version__",
           "remote_map", "remote_task", "transfer"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'funcx_flows' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
