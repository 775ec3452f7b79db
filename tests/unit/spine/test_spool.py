from __future__ import annotations

from waiting import wait_until

from funcx_flows import messages as m
from funcx_flows.endpoint.spool import Spool


def result(i: int) -> m.TaskResult:
    return m.TaskResult(task_id=f"t{i}", ok=True, data=bytes([i % 256]) * i)


def test_results_survive_a_reopen_until_acknowledged(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    spool.add([result(i) for i in range(1200)])
    spool.remove([f"t{i}" for i in range(0, 1200, 2)])
    spool.close()
    again = Spool(tmp_path / "spool.db")
    assert len(again) == 600 and "t1" in again and "t0" not in again
    seen = [r for batch in again.batches(500) for r in batch]
    assert sorted(r.task_id for r in seen) == sorted(f"t{i}" for i in range(1, 1200, 2))
    assert {r.task_id: r.data for r in seen}["t7"] == bytes([7]) * 7
    again.remove(["t1", "unknown"])
    assert len(again) == 599
    again.close()


def big(i: int) -> m.TaskResult:
    return m.TaskResult(task_id=f"big{i}", ok=True, data=bytes([i]) * (300 * 1024))


def test_large_results_live_in_files_until_acknowledged(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    spool.add([big(1), big(2), result(3)])
    assert len(list(spool.blobs.path.iterdir())) == 2  # the small one stays in the database
    spool.close()
    again = Spool(tmp_path / "spool.db")
    got = {r.task_id: r.data for batch in again.batches() for r in batch}
    assert got == {"big1": big(1).data, "big2": big(2).data, "t3": result(3).data}
    assert [r.data for r in again.get(["big2"])] == [big(2).data]
    again.remove(["big1", "t3"])
    assert len(list(again.blobs.path.iterdir())) == 1 and "big2" in again
    again.close()


def test_opening_clears_what_a_crash_left_half_done(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    spool.add([big(1)])
    (spool.blobs.path / "0123abc.part").write_bytes(b"half written")  # died while writing
    (spool.blobs.path / ("f" * 64)).write_bytes(b"row never committed")  # died before the row
    spool.close()
    again = Spool(tmp_path / "spool.db")
    assert len(list(again.blobs.path.iterdir())) == 1
    assert [r.task_id for r in again.get(["big1"])] == ["big1"]
    again.close()


def test_a_lost_result_file_becomes_a_failure_that_says_so(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    spool.add([big(1)])
    for f in spool.blobs.path.iterdir():
        f.unlink()
    (got,) = spool.get(["big1"])
    assert not got.ok and got.error is not None and "lost the result" in got.error.message
    spool.close()


def test_a_spool_of_an_earlier_version_is_read(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "spool.db")
    db.execute("CREATE TABLE results (task_id TEXT PRIMARY KEY, body BLOB NOT NULL)")
    db.execute("INSERT INTO results VALUES (?, ?)",
               ("t5", m.encode(m.Results(results=[result(5)]))))
    db.commit()
    db.close()
    spool = Spool(tmp_path / "spool.db")
    assert [r.data for r in spool.get(["t5"])] == [result(5).data]
    spool.add([big(1)])
    assert {r.task_id for b in spool.batches() for r in b} == {"t5", "big1"}
    spool.close()


def test_the_spools_own_thread_checkpoints_and_stops_with_it(tmp_path):

    from funcx_flows.endpoint.spool import CHECKPOINT_PERIOD_S

    path = tmp_path / "spool.db"
    spool = Spool(path)
    spool.add([m.TaskResult(task_id=f"t{i}", ok=True, data=b"r" * 4000) for i in range(100)])
    before = path.stat().st_size  # in the WAL so far
    wait_until(lambda: path.stat().st_size >= before + 100 * 4000,
               10 * CHECKPOINT_PERIOD_S + 5, "the WAL to be copied into the spool",
               interval=0.05)
    spool.close()
    assert not spool._checkpointer.is_alive()
