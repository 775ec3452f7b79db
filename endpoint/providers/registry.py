"""Which providers exist: declared here, apart from the providers themselves.

A provider is named in an endpoint's config (``provider: slurm``); this table says
which class serves the name, and whether its blocks are batch jobs (with a
walltime, released when idle) or processes on this host. Classes are imported only
when asked for, so that an endpoint that runs local blocks never imports PSI/J.
The config's choice of names is built from this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from funcx_flows.endpoint.config import EndpointConfig
    from funcx_flows.endpoint.providers.base import Provider


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    target: str  # "module:Class"
    batch: bool  # blocks are scheduler jobs: a walltime, released when idle

    def load(self) -> type[Any]:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


_P = "funcx_flows.endpoint.providers"
PROVIDERS: dict[str, ProviderSpec] = {spec.name: spec for spec in (
    ProviderSpec("local", f"{_P}.local:LocalProvider", batch=False),
    ProviderSpec("inline", f"{_P}.inline:InlineProvider", batch=False),
    ProviderSpec("slurm", f"{_P}.slurm:SlurmProvider", batch=True),
    ProviderSpec("pbs", f"{_P}.psij:PbsProvider", batch=True),
    ProviderSpec("lsf", f"{_P}.psij:LsfProvider", batch=True),
    ProviderSpec("flux", f"{_P}.psij:FluxProvider", batch=True),
    ProviderSpec("cobalt", f"{_P}.psij:CobaltProvider", batch=True),
)}
PROVIDER_NAMES = tuple(PROVIDERS)


def is_batch(name: str) -> bool:
    return PROVIDERS[name].batch


def make_provider(config: EndpointConfig, folder: Path) -> Provider:
    """The provider the config names, with its logs under ``folder/blocks``."""
    cls = PROVIDERS[config.provider].load()
    provider: Provider = cls.for_endpoint(config, folder / "blocks")
    return provider
