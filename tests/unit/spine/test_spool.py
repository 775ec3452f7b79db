from __future__ import annotations

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
