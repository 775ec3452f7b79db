"""MPI tasks through the whole path on a local endpoint with an ``mpi:`` section:
MPICH's mpiexec starts the ranks of a real MPI program (tests/mpi/hello.py) on the
slots the worker was lent. The same under Slurm's srun: tests/integration/slurm."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mpihello import HELLO, hello, ranks_said, two_at_once
from stacks import running

from funcx_flows.errors import CommandError, InvalidRequest
from funcx_flows.localstack import LocalStack
from funcx_flows.mpi import MPIFunction
from funcx_flows.sdk.executor import Executor


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, need) -> Iterator[LocalStack]:
    need(shutil.which("mpiexec") is not None and Path("/usr/lib/x86_64-linux-gnu/"
                                                      "libmpich.so.12").exists(),
         "MPICH (Debian: apt-get install mpich); .ci/run installs it")
    with running(Path(tmp_path_factory.mktemp("mpi")) / "home", endpoints={
            "mpi": {"max_workers_per_node": 3,
                    "mpi": {"launcher": "mpiexec", "slots_per_node": 4}},
            "plain": {"max_workers_per_node": 3}}) as s:
        yield s


@pytest.fixture
def executor(stack: LocalStack) -> Iterator[Executor]:
    client = stack.client()
    with Executor(stack.endpoints["mpi"].endpoint_id, client=client) as ex:
        yield ex
    client.close()


def test_hello_world_runs_every_rank_as_one_mpi_job(executor):
    executor.resources = {"num_ranks": 2}
    two = executor.submit(hello, "")
    executor.resources = {"num_nodes": 1, "ranks_per_node": 3}
    three = executor.submit(hello, "")
    result = two.result(timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.cmd.startswith("mpiexec -n 2 -hosts ")
    assert ranks_said(result.stdout, 2) == [0, 1], result
    assert ranks_said(three.result(timeout=120).stdout, 3) == [0, 1, 2]


def test_two_mpi_tasks_run_at_once_in_one_block(executor, tmp_path):
    """Each task's rank 0 waits for the other's: they end only if they ran together."""
    executor.resources = {"num_ranks": 2}
    two_at_once(executor, tmp_path)


def test_a_task_no_block_can_hold_fails_at_once_naming_why(executor):
    """Refused by the endpoint as it arrives (the config names the key), not by a
    worker: it never holds a worker or waits for one."""
    executor.resources = {"num_ranks": 9}
    with pytest.raises(CommandError, match=r"never run on this endpoint: it asks for 9 ranks; "
                                           r"the block has 4 slots \(mpi.slots_per_node\)"):
        executor.submit(hello, "").result(timeout=60)
    executor.resources = {"num_nodes": 2, "ranks_per_node": 1}
    with pytest.raises(CommandError, match=r"asks for 2 nodes; a block has 1 "
                                           r"\(nodes_per_block\)"):
        executor.submit(hello, "").result(timeout=60)


def test_a_contradictory_request_is_refused_at_submission(executor):
    executor.resources = {"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 3}
    with pytest.raises(InvalidRequest, match="num_ranks=3 contradicts"):
        executor.submit(hello, "").result(timeout=60)


def test_mpi_needs_resources_and_an_mpi_endpoint(stack, executor):
    with pytest.raises(CommandError, match="given no nodes"):
        executor.submit(hello, "").result(timeout=60)
    client = stack.client()
    try:
        with Executor(stack.endpoints["plain"].endpoint_id, client=client,
                      resources={"num_ranks": 2}) as plain, \
                pytest.raises(CommandError, match=r"no mpi: section in its config$"):
            plain.submit(hello, "").result(timeout=60)
    finally:
        client.close()


def test_walltime_stops_every_rank(executor, tmp_path):
    executor.resources = {"num_ranks": 2}
    stuck = MPIFunction(f"{sys.executable} {HELLO} --meet {tmp_path} --me a --other nobody",
                        walltime=2)
    with pytest.raises(TimeoutError, match="walltime of 2 s"):
        executor.submit(stuck).result(timeout=120)
    again = executor.submit(hello, "").result(timeout=120)  # its slots were lent back
    assert ranks_said(again.stdout, 2) == [0, 1]


def test_globus_computes_own_mpi_function_runs_under_the_launcher(executor, need):
    """A Globus Compute user's MPIFunction (the SDK's class, unchanged) puts
    ``$PARSL_MPI_PREFIX`` before its command: the worker sets it to the placement's
    launcher line, as Globus Compute's endpoints do."""
    try:
        from globus_compute_sdk import MPIFunction as GCMPIFunction
    except ImportError:
        need(False, "globus-compute-sdk (the extra funcx-flows[globus-compute])")
    executor.resources = {"num_ranks": 2}
    result = executor.submit(GCMPIFunction(f"{sys.executable} {HELLO}")).result(timeout=120)
    assert result.returncode == 0, result.stderr
    assert ranks_said(result.stdout, 2) == [0, 1], result
