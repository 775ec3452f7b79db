"""MPI requests read one way, and the block's node pool that lends slots to them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from funcx_flows.endpoint.config import parse_config
from funcx_flows.endpoint.mpi import NodePool, Placement, launcher_prefix, refusal
from funcx_flows.errors import CommandError, ConfigError
from funcx_flows.messages import ResourceSpec
from funcx_flows.mpi import MPIRequest


@pytest.mark.parametrize(("resources", "request_"), [
    ({"num_nodes": 2, "ranks_per_node": 3}, MPIRequest(6, 2, 3)),
    ({"ranks_per_node": 3}, MPIRequest(3, 1, 3)),
    ({"num_ranks": 5}, MPIRequest(5)),
    ({"num_nodes": 2, "num_ranks": 5}, MPIRequest(5, 2)),
    ({"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 4}, MPIRequest(4, 2, 2)),
    ({"cores": 4}, None),
])
def test_requests_are_made_whole(resources, request_):
    assert MPIRequest.from_resources(resources) == request_
    assert MPIRequest.from_resources(ResourceSpec(**resources)) == request_


@pytest.mark.parametrize(("resources", "why"), [
    ({"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 5}, "contradicts"),
    ({"num_nodes": 2}, "needs ranks_per_node or num_ranks"),
    ({"num_nodes": 3, "num_ranks": 2}, "every node needs a rank"),
    ({"num_ranks": 0}, "1 or more"),
    ({"num_ranks": True}, "whole number"),
])
def test_contradictions_are_named(resources, why):
    with pytest.raises(CommandError, match=why):
        MPIRequest.from_resources(resources)


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text("{}")
    return NodePool(str(path), {"n1": 4, "n2": 4, "n3": 2})


def test_tasks_share_nodes_while_their_slots_fit_then_wait(pool):
    a = pool.try_claim(MPIRequest(3, 1, 3), owner=os.getpid())
    assert a == Placement({"n1": 3})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        b = pool.try_claim(MPIRequest(6, 2, 3), owner=other.pid)
        assert b is None  # only n2 still has 3 free slots
        c = pool.try_claim(MPIRequest(5), owner=other.pid)
        assert c == Placement({"n2": 4, "n3": 1})  # fewest nodes, freest first
        assert pool.try_claim(MPIRequest(3), owner=12) is None  # 1 + 0 + 1 free
        pool.release(os.getpid())
        assert pool.try_claim(MPIRequest(4, 1, 4), owner=os.getpid()) == Placement({"n1": 4})
    finally:
        other.kill()
        other.wait()
    # a claim whose worker died is dropped by the next claim
    assert pool.try_claim(MPIRequest(2, 2, 1), owner=os.getpid()) is not None


def test_what_can_never_fit_is_said_up_front(pool):
    assert pool.never_fits(MPIRequest(4, 4, 1)) == "it asks for 4 nodes; a block has 3"
    assert "5 ranks per node" in pool.never_fits(MPIRequest(5, 1, 5))
    assert pool.never_fits(MPIRequest(11)) == "it asks for 11 ranks; the block has 10 slots"
    assert "on 2 nodes; they have 8 slots" in pool.never_fits(MPIRequest(9, 2))
    assert pool.never_fits(MPIRequest(10)) == ""
    with pytest.raises(CommandError, match="can never run"), pool.lend(MPIRequest(11)):
        pass


def test_launcher_command_lines():
    placement = Placement({"n1": 2, "n2": 1})
    assert launcher_prefix("srun", "--mpi=pmi2", placement) == (
        "srun --overlap --nodes=2 --ntasks=3 --nodelist=n1,n2 --mpi=pmi2")
    assert launcher_prefix("srun", "", Placement({"n1": 2, "n2": 2})) == (
        "srun --overlap --nodes=2 --ntasks=4 --nodelist=n1,n2 --ntasks-per-node=2")
    assert launcher_prefix("mpiexec", "", placement) == "mpiexec -n 3 -hosts n1:2,n2:1"
    assert launcher_prefix("mpirun", "", placement) == "mpirun -np 3 --host n1:2,n2:1"


def test_the_agent_refuses_what_its_blocks_cannot_hold():
    assert refusal(ResourceSpec(cores=2), False, 1, None) == ""
    assert "no mpi: section" in refusal(ResourceSpec(num_ranks=2), False, 1, None)
    assert "2 nodes; a block has 1" in refusal(ResourceSpec(num_nodes=2, num_ranks=2),
                                              True, 1, None)
    assert "slots_per_node" in refusal(ResourceSpec(num_ranks=5), True, 2, 2)
    assert refusal(ResourceSpec(num_ranks=4), True, 2, 2) == ""


def test_config_mpi_section():
    assert parse_config({"mpi": {"launcher": "srun"}}).mpi is not None
    with pytest.raises(ConfigError, match="set launcher: single"):
        parse_config({"mpi": {}, "launcher": "srun", "nodes_per_block": 2})
    with pytest.raises(ConfigError, match=r"mpi\.launcher"):
        parse_config({"mpi": {"launcher": "aprun"}})
