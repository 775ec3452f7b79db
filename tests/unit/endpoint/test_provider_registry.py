"""The providers a config may name are those the registry declares, each a class
that serves the agent's contract; batch schedulers are small PSI/J subclasses."""

from __future__ import annotations

import pytest

from funcx_flows.endpoint.config import parse_config
from funcx_flows.endpoint.providers.psij import PsijProvider
from funcx_flows.endpoint.providers.registry import PROVIDER_NAMES, PROVIDERS, is_batch
from funcx_flows.errors import ConfigError


@pytest.mark.parametrize("name", PROVIDER_NAMES)
def test_every_declared_provider_loads_and_serves_the_agent(name):
    cls = PROVIDERS[name].load()
    for method in ("for_endpoint", "submit", "poll", "cancel", "close"):
        assert callable(getattr(cls, method)), (name, method)
    if is_batch(name):  # a PSI/J executor of that name, nothing else to write
        assert issubclass(cls, PsijProvider) and cls.executor_name == name
    assert parse_config({"provider": name}).provider == name
    assert parse_config({"provider": name}).min_blocks == (0 if is_batch(name) else 1)


def test_a_provider_the_registry_does_not_know_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError) as refused:
        parse_config({"provider": "sge"})
    for name in PROVIDER_NAMES:
        assert name in str(refused.value)
