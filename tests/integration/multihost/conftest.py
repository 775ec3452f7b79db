"""The ``facility`` fixture: the hosts of facility.py, the service and its proxy
started once per module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns
import pytest
from facility import Facility, build


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory, need: Any) -> Iterator[Facility]:
    need(not netns.available(), netns.available() or "network namespaces")
    need(shutil.which("haproxy") is not None, "HAProxy (apt-get install haproxy)")
    root = Path(tmp_path_factory.mktemp("facility"))
    net, f = build(root)
    try:
        f.start_service()
        f.start_proxy()
        yield f
    finally:
        net.close()
