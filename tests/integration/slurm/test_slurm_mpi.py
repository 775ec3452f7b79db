"""MPI tasks in a real Slurm block: the block's manager lends its node to MPIFunction
tasks, whose ranks srun starts (MPICH through Slurm's PMI-2) inside the block's job."""

from __future__ import annotations

import shutil

import pytest
from mpihello import hello, ranks_said, two_at_once
from slurmjobs import HPC

from funcx_flows.sdk.executor import Executor

MPI_HPC = {**HPC, "max_blocks": 1, "idle_timeout": 60,
           "mpi": {"launcher_options": "--mpi=pmi2", "slots_per_node": 4}}


@pytest.fixture(scope="module")
def executor(slurm_stack, need):
    need(shutil.which("mpiexec") is not None, "MPICH (Debian: apt-get install mpich)")
    ep = slurm_stack.start_endpoint("mpi-hpc", MPI_HPC, timeout=120)
    client = slurm_stack.client()
    with Executor(endpoint_id=ep.endpoint_id, client=client,
                  resources={"num_nodes": 1, "ranks_per_node": 2}) as ex:
        yield ex
    client.close()


def test_srun_starts_each_rank_of_a_hello_world_inside_the_block(executor):
    result = executor.submit(hello, "").result(timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.cmd.startswith("srun --overlap --nodes=1 --ntasks=2 --nodelist=")
    assert ranks_said(result.stdout, 2) == [0, 1], result


def test_two_mpi_tasks_share_the_block_at_once(executor, tmp_path):
    two_at_once(executor, tmp_path)
