from __future__ import annotations

import pytest

from funcx_flows.errors import ConfigError
from funcx_flows.triggers import config as cfg
from funcx_flows.triggers.state import FileVersion, StateStore
from funcx_flows.triggers.targets import load_callable, render

GOOD = {"triggers": [{"type": "files", "name": "det", "paths": ["/data"],
                      "target": {"flow": "flows_examples.beamline:beamline"}}]}


def test_a_good_file_parses_with_defaults():
    t = cfg.parse(GOOD).triggers[0]
    assert t.settle_s == 2.0 and t.batch_size == 1 and t.target.kind == "flow"


@pytest.mark.parametrize(("change", "words"), [
    ({"setle_s": 1}, ["triggers.0.setle_s", "unknown key"]),
    ({"batch_size": 0}, ["triggers.0.batch_size"]),
    ({"mode": "magic"}, ["triggers.0.mode"]),
    ({"target": {"kind": "deployment"}}, ["needs the key 'deployment'"]),
    ({"name": "has space"}, ["triggers.0.name"]),
])
def test_bad_keys_and_values_are_named(change, words):
    data = {"triggers": [{**GOOD["triggers"][0], **change}]}
    with pytest.raises(ConfigError) as info:
        cfg.parse(data, "t.yaml")
    for w in words:
        assert w in str(info.value)


def test_missing_type_and_duplicate_names():
    with pytest.raises(ConfigError, match=r"triggers\.0\.type"):
        cfg.parse({"triggers": [{"name": "x", "paths": ["/d"], "target": {"flow": "m:f"}}]})
    with pytest.raises(ConfigError, match="unique"):
        cfg.parse({"triggers": [GOOD["triggers"][0], GOOD["triggers"][0]]})


def test_templates_keep_types_and_format_strings():
    ctx = {"paths": ["/a", "/b"], "path": "/a", "count": 2, "batch_id": "r1"}
    assert render({"files": "{paths}", "label": "batch {batch_id} of {count}", "n": 3,
                   "nested": ["{path}"]}, ctx) == {
        "files": ["/a", "/b"], "label": "batch r1 of 2", "n": 3, "nested": ["/a"]}
    with pytest.raises(ConfigError, match="unknown field"):
        render("{nope}", ctx)


def test_flow_references_load_or_explain(tmp_path):
    mod = tmp_path / "myflows.py"
    mod.write_text("def handle(paths):\n    return len(paths)\n")
    assert load_callable(f"{mod}:handle")(paths=[1, 2]) == 2
    assert load_callable("json:dumps")([1]) == "[1]"
    for bad, word in [("nocolon", "expected"), ("json:nothing", "has no"),
                      ("no_such_module_xyz:f", "cannot import")]:
        with pytest.raises(ConfigError, match=word):
            load_callable(bad)


def test_file_versions_are_recorded_once_and_batched_atomically(tmp_path):
    store = StateStore(tmp_path / "s.db")
    a, b = FileVersion("/a", 1, 10), FileVersion("/b", 2, 20)
    assert store.record_files("t", [a, b]) == [a, b]
    assert store.record_files("t", [a, FileVersion("/a", 5, 11)]) == [FileVersion("/a", 5, 11)]
    assert [v for v, _ in store.unbatched("t")] == [a, b, FileVersion("/a", 5, 11)]
    run = store.batch("t", [a, b], {"paths": ["/a", "/b"]})
    assert [v for v, _ in store.unbatched("t")] == [FileVersion("/a", 5, 11)]
    store.close()
    again = StateStore(tmp_path / "s.db")
    due = again.due("t", 10)
    assert [r.run_id for r in due] == [run] and due[0].context["paths"] == ["/a", "/b"]
    again.mark_running(run)
    assert again.recover("other") == 0  # only the trigger's own runs
    assert again.recover("t") == 1  # a crash while starting an idempotent target: queued again
    assert again.add_run("g", {"task_id": "T"}, seen_task="T") is not None
    assert again.add_run("g", {"task_id": "T"}, seen_task="T") is None
    again.close()


def test_claims_are_atomic_and_in_order(tmp_path):
    store = StateStore(tmp_path / "s.db")
    ids = store.batch_many("t", [([FileVersion(f"/{i}", 1, 1)], {"paths": [f"/{i}"]})
                                 for i in range(3)])
    first = store.claim("t")
    assert first is not None and first.run_id == ids[0] and first.attempts == 1
    assert store.runs("t", states=("running",))[0].run_id == ids[0]
    store.release(first.run_id)  # never started: back, attempt not counted
    again = store.claim("t")
    assert again is not None and again.run_id == ids[0] and again.attempts == 1
    assert [store.claim("t").run_id for _ in range(2)] == ids[1:]  # type: ignore[union-attr]
    assert store.claim("t") is None
    store.close()


def test_an_in_process_run_cut_off_by_a_crash_is_interrupted_not_rerun(tmp_path):
    store = StateStore(tmp_path / "s.db")
    run_id = store.add_run("t", {"paths": ["/a"]})
    assert run_id is not None and store.claim("t") is not None
    assert store.recover("t", rerun=False) == 1
    (run,) = store.runs("t")
    assert run.state == "interrupted" and "replay" in (run.error or "")
    assert store.claim("t") is None  # never started again by itself
    store.requeue(run_id)
    assert store.claim("t") is not None
    store.close()


def test_one_process_serves_a_trigger_per_state_database(tmp_path):
    import subprocess
    import sys

    from funcx_flows.triggers.state import TriggerAlreadyRunning

    store = StateStore(tmp_path / "s.db")
    held = store.claim_trigger("det")
    code = ("import sys; from pathlib import Path\n"
            "from funcx_flows.triggers.state import StateStore, TriggerAlreadyRunning\n"
            f"s = StateStore(Path({str(tmp_path / 's.db')!r}))\n"
            "try:\n    s.claim_trigger('det')\nexcept TriggerAlreadyRunning as e:\n"
            "    print(e); sys.exit(3)\n"
            "s.claim_trigger('other')\n")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
    assert other.returncode == 3 and "already being served" in other.stdout
    assert "pid" in other.stdout
    held.close()
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    with pytest.raises(TriggerAlreadyRunning), store.claim_trigger("x"):
        store.claim_trigger("x")
    store.close()


GLOBUS = {"type": "globus", "name": "landed", "target": {"flow": "m:f"}}


def test_globus_since_is_utc_and_bad_globus_keys_are_named():
    t = cfg.parse({"triggers": [{**GLOBUS, "since": "2026-11-01T08:00:00"}]}).triggers[0]
    assert t.since is not None and t.since.isoformat() == "2026-11-01T08:00:00+00:00"
    zoned = cfg.parse({"triggers": [{**GLOBUS, "since": "2026-11-01T10:00:00+02:00"}]})
    assert zoned.triggers[0].since.timestamp() == t.since.timestamp()
    assert cfg.parse({"triggers": [GLOBUS]}).triggers[0].since is None
    for change, key in [({"since": "last tuesday"}, "triggers.0.since"),
                        ({"file_list_concurrency": 0}, "triggers.0.file_list_concurrency"),
                        ({"stall_after_s": 0}, "triggers.0.stall_after_s")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            cfg.parse({"triggers": [{**GLOBUS, **change}]})


def test_rejections_are_kept_with_their_rules_and_a_fired_task_leaves_them(tmp_path):
    store = StateStore(tmp_path / "state.db")
    store.reject_tasks("t", [("a", "no file under /data/"), ("b", "label")], rules="r1")
    assert store.decided_tasks("t", ["a", "b", "c"], "r1") == {"a", "b"}
    assert store.decided_tasks("t", ["a", "b", "c"], "r2") == set()  # other rules: judge again
    assert store.add_run("t", {"task_id": "a"}, seen_task="a") is not None
    assert store.decided_tasks("t", ["a", "b"], "r2") == {"a"}
    assert store.transfer_counts() == {"t": {"fired": 1, "rejected": 1}}
    assert store.note_gaps("t", [("cell", "10 of 20")]) == ["cell"]
    assert store.note_gaps("t", [("cell", "11 of 20")]) == []
    assert store.gaps() == {"t": [("cell", "11 of 20")]}
    store.close()


def test_a_relative_flow_file_is_the_one_beside_the_config(tmp_path, monkeypatch):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "triggers.yaml").write_text(
        "triggers:\n"
        "  - {type: files, name: a, paths: [/d], target: {flow: 'flows/beam.py:beam'}}\n"
        "  - {type: files, name: b, paths: [/d], target: {flow: 'pkg.mod:f'}}\n"
        f"  - {{type: files, name: c, paths: [/d], target: {{flow: '{tmp_path}/x.py:f'}}}}\n")
    monkeypatch.chdir(tmp_path)  # run from elsewhere
    from pathlib import Path

    loaded = cfg.load(Path("pipelines/triggers.yaml"))
    assert [t.target.flow for t in loaded.triggers] == [
        f"{folder / 'flows' / 'beam.py'}:beam", "pkg.mod:f", f"{tmp_path}/x.py:f"]
