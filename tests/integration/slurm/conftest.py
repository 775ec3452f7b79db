"""An endpoint whose blocks are real Slurm jobs submitted through PSI/J."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from slurmjobs import cancel_our_jobs, node_states, slurm_up
from waiting import wait_until

from funcx_flows.localstack import LocalStack


@pytest.fixture(scope="module")
def slurm_stack(tmp_path_factory: pytest.TempPathFactory, need) -> Iterator[LocalStack]:
    need(node_states() is not None, "a Slurm cluster (sinfo answers); .ci/run starts one")
    # the previous module's jobs may still be ending (allocated, completing)
    wait_until(slurm_up, 60, "a Slurm node that can take a job", interval=0.5,
               detail=node_states)
    s = LocalStack(Path(tmp_path_factory.mktemp("slurm")) / "home")
    try:
        s.start_service()
        yield s
    finally:
        s.stop()
        cancel_our_jobs()
