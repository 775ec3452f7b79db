"""An endpoint whose blocks are real Slurm jobs submitted through PSI/J."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from slurmjobs import cancel_our_jobs, slurm_up

from funcx_flows.localstack import LocalStack


@pytest.fixture(scope="module")
def slurm_stack(tmp_path_factory: pytest.TempPathFactory, need) -> Iterator[LocalStack]:
    need(slurm_up(), "a Slurm cluster (sinfo answers with an idle node); .ci/run starts one")
    s = LocalStack(Path(tmp_path_factory.mktemp("slurm")) / "home")
    try:
        s.start_service()
        yield s
    finally:
        s.stop()
        cancel_our_jobs()
