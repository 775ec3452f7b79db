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
    assert again.recover() == 1  # a crash while starting: queued again
    assert again.add_run("g", {"task_id": "T"}, seen_task="T") is not None
    assert again.add_run("g", {"task_id": "T"}, seen_task="T") is None
    again.close()
