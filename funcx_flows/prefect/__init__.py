"""Prefect integration: remote tasks, the endpoint task runner, batched maps, Globus transfers.

Imported on first use only (``import funcx_flows`` does not import Prefect).
"""

from funcx_flows.prefect.batch import RemoteMapError, remote_map
from funcx_flows.prefect.runner import EndpointTaskRunner
from funcx_flows.prefect.task import remote_task
from funcx_flows.prefect.transfer import transfer

__all__ = ["EndpointTaskRunner", "RemoteMapError", "remote_map", "remote_task", "transfer"]
