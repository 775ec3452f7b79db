"""Pilot jobs on a real Slurm cluster: tasks in Slurm jobs, scale out and in, a block
cancelled mid-task, and a block that cannot start."""

from __future__ import annotations

import subprocess
import time

from slurmjobs import HPC, our_jobs
from waiting import wait_until

from funcx_flows.errors import NotFound
from funcx_flows.sdk.executor import Executor


def in_job(x):
    import os
    import time

    time.sleep(x)
    return os.environ.get("SLURM_JOB_ID")


def wait(predicate, timeout=90, what="condition"):
    return wait_until(predicate, timeout, what, interval=0.2)


def state_of(client, task_id):
    try:
        return client.get_task(task_id)["state"]
    except NotFound:  # not submitted yet
        return None


def blocks(client, endpoint_id):
    return client.get_endpoint_status(endpoint_id)["blocks"]


def test_tasks_run_in_slurm_jobs_scale_out_and_in(slurm_stack):
    ep = slurm_stack.start_endpoint("hpc", HPC, timeout=120)
    client = slurm_stack.client()
    try:
        first = wait(lambda: [b for b in blocks(client, ep.endpoint_id)
                              if b["state"] == "running" and b["job_id"]], what="a block")
        with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
            job_ids = {ex.submit(in_job, 0).result(timeout=120) for _ in range(4)}
            assert job_ids == {first[0]["job_id"]}  # inside the block's Slurm job
            # more work than one block's 2 workers: a second block comes
            futures = [ex.submit(in_job, 1.5) for _ in range(12)]
            wait(lambda: len([b for b in blocks(client, ep.endpoint_id)
                              if b["state"] in ("pending", "running")]) == 2,
                 what="a second block")
            assert len({f.result(timeout=180) for f in futures}) == 2
        # idle past idle_timeout with min_blocks 0: every block is released
        wait(lambda: not [b for b in blocks(client, ep.endpoint_id)
                          if b["state"] in ("pending", "running")], timeout=120,
             what="scale in")
        wait(lambda: not our_jobs(), timeout=60, what="the Slurm jobs to end")
        # and work brings a block back
        with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
            assert ex.submit(in_job, 0).result(timeout=180)
    finally:
        client.close()
        slurm_stack.stop_endpoint("hpc")
    wait(lambda: not our_jobs(), timeout=60, what="stop to cancel its blocks")


def test_a_cancelled_block_is_replaced_and_its_tasks_retried(slurm_stack):
    ep = slurm_stack.start_endpoint("hpc2", {**HPC, "max_blocks": 1, "idle_timeout": 60},
                                    timeout=120)
    client = slurm_stack.client()
    try:
        with Executor(endpoint_id=ep.endpoint_id, client=client) as ex:
            futures = [ex.submit(in_job, 4) for _ in range(2)]
            wait(lambda: all(state_of(client, f.task_id) == "running" for f in futures),
                 what="tasks running")
            (victim,) = [b["job_id"] for b in blocks(client, ep.endpoint_id)
                         if b["state"] == "running"]
            subprocess.run(["scancel", victim], check=True, timeout=30)
            results = [f.result(timeout=180) for f in futures]
        assert victim not in results and len(set(results)) == 1  # rerun in the new block
        records = client.fetch_tasks([f.task_id for f in futures])
        assert all(r["attempts"] == 2 for r in records)
        states = {b["job_id"]: b["state"] for b in blocks(client, ep.endpoint_id)}
        assert states[victim] in ("cancelled", "ended", "failed")
    finally:
        client.close()
        slurm_stack.stop_endpoint("hpc2")


def test_a_block_that_cannot_start_is_reported_with_slurms_reason(slurm_stack):
    ep = slurm_stack.start_endpoint("badq", {**HPC, "queue": "no-such-partition"},
                                    timeout=120, workers=False)
    client = slurm_stack.client()
    try:
        failed = wait(lambda: [b for b in blocks(client, ep.endpoint_id)
                               if b["state"] == "failed"], what="the refused block")
        assert "partition" in failed[0]["message"].lower()
        status = client.get_endpoint_status(ep.endpoint_id)
        assert any("could not start" in e for e in status["recent_errors"])
        time.sleep(5)  # it backs off instead of submitting in a loop
        refused = [b for b in blocks(client, ep.endpoint_id) if b["state"] == "failed"]
        assert len(refused) <= 3
        cli = slurm_stack.endpoint_cli("status", "badq")
        assert "partition" in cli.stdout.lower()
    finally:
        client.close()
        slurm_stack.stop_endpoint("badq")
