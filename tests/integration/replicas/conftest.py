"""Three service replicas on the tests' PostgreSQL behind HAProxy, and an endpoint
linked through the proxy by WebSocket (see tests/replicastack.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from replicastack import PG_URL, Cluster, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, need: Any) -> Iterator[Cluster]:
    need(bool(PG_URL), "PostgreSQL: set FUNCX_FLOWS_TEST_POSTGRES_URL")
    need(shutil.which("haproxy") is not None, "HAProxy (apt-get install haproxy)")
    with running_cluster(Path(tmp_path_factory.mktemp("replicas"))) as c:
        yield c
