"""Naming a Globus Compute endpoint where a funcx-flows endpoint would go.

A remote task, a task runner or ``remote_map`` runs on a funcx-flows endpoint
when given its name or id, and on an existing Globus Compute endpoint when given
``GlobusComputeEndpoint("<uuid>")`` or the string ``"gc:<uuid>"``: one flow may
use both. This module is light (it does not import ``globus_compute_sdk``), so
that a flow names a Globus Compute endpoint without the extra installed until a
task actually runs there; then ``require_sdk`` says which extra to install.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from types import ModuleType

from funcx_flows.errors import ConfigError

PREFIX = "gc:"
EXTRA = "funcx-flows[globus-compute]"


@dataclass(frozen=True)
class GlobusComputeEndpoint:
    """An endpoint of the Globus Compute service, by its UUID.

    ``environment``: the Globus Compute environment the SDK talks to (default:
    ``$GLOBUS_SDK_ENVIRONMENT``, else production); ``"local"`` is the SDK's own
    name for a service on ``http://localhost:5000``, which the tests use."""

    endpoint_id: str
    environment: str | None = None

    def __post_init__(self) -> None:
        try:
            canonical = str(uuid.UUID(str(self.endpoint_id)))
        except ValueError:
            raise ConfigError(
                f"a Globus Compute endpoint is named by its UUID, not {self.endpoint_id!r} "
                "(`globus-compute-endpoint list` shows them)") from None
        object.__setattr__(self, "endpoint_id", canonical)

    def __str__(self) -> str:
        return PREFIX + self.endpoint_id


Endpoint = str | GlobusComputeEndpoint


def as_endpoint(value: Endpoint) -> Endpoint:
    """A funcx-flows endpoint name or id as it is; ``"gc:<uuid>"`` as a
    ``GlobusComputeEndpoint``."""
    if isinstance(value, GlobusComputeEndpoint):
        return value
    if not isinstance(value, str) or not value:
        raise TypeError(f"an endpoint is a funcx-flows endpoint's name or id, "
                        f"GlobusComputeEndpoint('<uuid>') or 'gc:<uuid>'; got {value!r}")
    if value.startswith(PREFIX):
        return GlobusComputeEndpoint(value[len(PREFIX):])
    return value


def require_sdk() -> ModuleType:
    """``globus_compute_sdk``, or a ConfigError that names the extra to install."""
    try:
        import globus_compute_sdk
    except ImportError as exc:
        raise ConfigError(
            f"running on a Globus Compute endpoint needs the globus-compute extra: "
            f"pip install '{EXTRA}' ({exc})") from exc
    module: ModuleType = globus_compute_sdk
    return module
