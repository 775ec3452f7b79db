"""A full or read-only disk under the service's database or the endpoint's spool:
a clear error, nothing lost, nothing corrupted.

The disks are real: small tmpfs mounts (root only), filled with a real file until
the kernel answers ENOSPC, then freed.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from waiting import finished_task, wait_until

from funcx_flows.errors import StorageUnavailable
from funcx_flows.localstack import LocalStack
from funcx_flows.retry import RetryPolicy
from funcx_flows.sdk.stream import ResultStream

FAST = {"FUNCX_FLOWS_HEARTBEAT_PERIOD_S": "0.5", "FUNCX_FLOWS_HEARTBEAT_THRESHOLD_S": "5"}
CONFIG = {"max_workers_per_node": 2}


class SmallDisk:
    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.filler = mount / "filler"

    def fill(self) -> None:
        """Write until the kernel says the disk is full (down to the last byte)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def remount(self, mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mount", "-o", f"remount,{mode}", str(self.mount)],
                              capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path, need: Callable[[bool, str], None]) -> Iterator[SmallDisk]:
    mount = tmp_path / "disk"
    mount.mkdir()
    need(os.geteuid() == 0 and shutil.which("mount") is not None,
         "a real full disk needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    need(done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class Delivered:
    """What a result stream delivers, per task. The stream may repeat a record (its
    replay and its live feed overlap, as documented); a second *completion* would
    carry another sequence number."""

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.counts: collections.Counter[str] = collections.Counter()
        self.seqs: collections.defaultdict[str, set[int]] = collections.defaultdict(set)
        self.records: dict[str, dict] = {}
        self.all_in = threading.Event()

    def completed_once(self, ids: list[str]) -> bool:
        return all(len(self.seqs[t]) == 1 for t in ids)

    def __call__(self, records: list[dict]) -> None:
        for r in records:
            self.counts[r["task_id"]] += 1
            self.seqs[r["task_id"]].add(r["seq"])
            self.records[r["task_id"]] = r
        if self.expected <= set(self.counts):
            self.all_in.set()


def big_result(i):
    return bytes([i % 256]) * 50_000


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def _run(client, endpoint_id: str, fid: str, arg: int) -> object:
    task_id = client.run(fid, arg, endpoint_id=endpoint_id)
    finished_task(client, task_id)
    return client.get_result(task_id)


def test_full_disk_under_the_service_database(tmp_path: Path, small_disk: SmallDisk):
    db_path = small_disk.mount / "service.db"
    stack = LocalStack(tmp_path / "home", env={
        **FAST, "FUNCX_FLOWS_DATABASE_URL": f"sqlite:///{db_path}"})
    try:
        stack.start_service()
        ep = stack.start_endpoint("ep", CONFIG)
        client = stack.client(retry=RetryPolicy(max_attempts=0))  # a refusal at once
        fid = client.register_function(big_result)
        slow = client.register_function(time.sleep)

        # Tasks in flight when the disk fills: their results cannot be stored.
        batch = client.create_batch(ep.endpoint_id, group_id="full")
        ids = [batch.add(slow, (3,)) for _ in range(2)]
        ids += [batch.add(fid, (i,)) for i in range(30)]
        client.batch_run(batch)
        delivered = Delivered(set(ids))
        stream = ResultStream(client.websocket_url, client.token, delivered, group_id="full")
        stream.start()
        small_disk.fill()

        # A submission now is refused with a message that says why; nothing is stored.
        refused: StorageUnavailable | None = None
        payload = b"p" * 50_000
        for _ in range(100):
            b = client.create_batch(ep.endpoint_id, group_id="refused")
            for _ in range(20):
                b.add(fid, (payload,))
            try:
                client.batch_run(b)
            except StorageUnavailable as exc:
                refused = exc
                break
        assert refused is not None, "the database never reported the full disk"
        assert refused.http_status == 503
        # what a load balancer sees: alive, not ready (and why)
        health = stack.service_url + "/v1/health"
        assert httpx.get(health + "/live").status_code == 200
        ready = httpx.get(health + "/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["error"]["code"] == "storage_unavailable"
        assert "full" in refused.message and "nothing was stored" in refused.message
        # A large argument goes to a file beside the database: refused the same way.
        b = client.create_batch(ep.endpoint_id, group_id="refused")
        b.add(fid, (b"p" * 400_000,))
        with pytest.raises(StorageUnavailable) as big:
            client.batch_run(b)
        assert "full" in big.value.message and "nothing was stored" in big.value.message

        # The service could not store some results: the agent keeps them until then.
        time.sleep(4)
        log = (stack.home / "service-stdout.log").read_text()
        assert "database error on Results" in log
        assert not delivered.all_in.is_set()

        small_disk.free()
        wait_until(lambda: httpx.get(health + "/ready").status_code == 200, 30, "readiness")
        assert delivered.all_in.wait(90), f"{len(set(ids) - set(delivered.counts))} lost"
        stream.close()
        assert delivered.completed_once(ids), "a task was completed twice"
        assert all(delivered.records[t]["state"] == "success" for t in ids)
        assert [r["state"] for r in client.fetch_tasks(ids)] == ["success"] * len(ids)
        assert client.get_result(ids[5]) == big_result(3)

        # The service works again, and the database is intact.
        assert _run(client, ep.endpoint_id, fid, 7) == big_result(7)
        client.close()
        stack.stop()
        assert _integrity(db_path) == "ok"
        spool = ep.folder / "spool.db"
        wait_until(lambda: sqlite3.connect(spool).execute(
            "SELECT count(*) FROM results").fetchone()[0] == 0, 5, "the spool to drain")
    finally:
        stack.stop()


def test_full_disk_under_the_endpoint_spool(tmp_path: Path, small_disk: SmallDisk):
    stack = LocalStack(tmp_path / "home", env=FAST)
    (stack.home / "endpoints").symlink_to(small_disk.mount)
    try:
        stack.start_service()
        ep = stack.start_endpoint("ep", CONFIG)
        client = stack.client()
        fid = client.register_function(big_result)
        small_disk.fill()

        batch = client.create_batch(ep.endpoint_id, group_id="spool")
        ids = [batch.add(fid, (i,)) for i in range(40)]
        client.batch_run(batch)
        delivered = Delivered(set(ids))
        stream = ResultStream(client.websocket_url, client.token, delivered, group_id="spool")
        stream.start()
        # The results travel from memory while the spool cannot take them.
        assert delivered.all_in.wait(90), f"{len(set(ids) - set(delivered.counts))} lost"
        stream.close()
        assert delivered.completed_once(ids), "a task was completed twice"
        assert [r["state"] for r in client.fetch_tasks(ids)] == ["success"] * len(ids)

        def reported() -> bool:
            errors = client.get_endpoint_status(ep.endpoint_id)["recent_errors"]
            return any("cannot write the result spool" in e and "full" in e for e in errors)

        wait_until(reported, 10, "the endpoint to report its spool problem")

        small_disk.free()
        assert _run(client, ep.endpoint_id, fid, 9) == big_result(9)
        wait_until(lambda: "spool_error" not in json.loads((ep.folder / "status.json").read_text()),
              30, "the agent to report the spool writable again")
        stack.stop_endpoint("ep")
        assert _integrity(ep.folder / "spool.db") == "ok"
        client.close()
    finally:
        stack.stop()


def test_read_only_disk_under_the_endpoint_is_a_clear_error(tmp_path: Path,
                                                            small_disk: SmallDisk):
    stack = LocalStack(tmp_path / "home", env=FAST)
    (stack.home / "endpoints").symlink_to(small_disk.mount)
    stack.start_service()
    try:
        stack.configure_endpoint("ep", CONFIG)
        done = small_disk.remount("ro")
        assert done.returncode == 0, done.stderr
        for args in (["start", "ep", "--foreground"], ["start", "ep"]):
            run = stack.endpoint_cli(*args, check=False)
            assert run.returncode != 0
            assert "Traceback" not in run.stderr + run.stdout
            assert "read-only" in (run.stderr + run.stdout).lower(), run.stderr
    finally:
        small_disk.remount("rw")
        stack.stop()


def test_read_only_disk_under_the_service_database(tmp_path: Path, small_disk: SmallDisk):
    stack = LocalStack(tmp_path / "home", env={
        **FAST, "FUNCX_FLOWS_DATABASE_URL": f"sqlite:///{small_disk.mount / 'service.db'}"})
    try:
        stack.start_service()
        stack.stop()
        done = small_disk.remount("ro")
        assert done.returncode == 0, done.stderr
        run = subprocess.run([sys.executable, "-m", "funcx_flows.service", "--port", "0"],
                             env=stack.env, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, check=False)
        assert run.returncode != 0
        assert "Traceback" not in run.stderr
        assert "read-only" in run.stderr.lower() or "readonly" in run.stderr.lower(), run.stderr
    finally:
        small_disk.remount("rw")
        stack.stop()
