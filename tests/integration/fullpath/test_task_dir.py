"""``task_dir:`` through the whole path: each task in a fresh folder of its own on a
real endpoint (a manager process, and workers the endpoint forks), one worker so
that consecutive tasks share it; the folder removed after, or kept for a failed
task when asked, and the bad roots refused when the endpoint starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from funcx_flows.endpoint.config import parse_config
from funcx_flows.errors import ConfigError
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor


@pytest.fixture(scope="module", params=["local", "inline"])
def stack(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    folder = Path(tmp_path_factory.mktemp("taskdir"))
    s = LocalStack(folder / "home")
    try:
        s.start_service()
        common = {"max_workers_per_node": 1, "heartbeat_period_s": 0.5,
                  "heartbeat_threshold_s": 5, "provider": request.param}
        for name, keep in (("keep", True), ("tidy", False)):
            (folder / name).mkdir()
            s.start_endpoint(name, {**common, "task_dir": {
                "root": str(folder / name), "keep_on_failure": keep}})
        yield s
    finally:
        s.stop()


def root(stack: LocalStack, name: str) -> Path:
    return stack.home.parent / name


def look_around(leak: str) -> dict[str, object]:
    import os
    import tempfile

    seen = {"cwd": os.getcwd(), "files": sorted(os.listdir(".")), "pid": os.getpid(),
            "tmp": [os.environ.get(v) for v in ("TMPDIR", "TEMP", "TMP")],
            "gettempdir": tempfile.gettempdir(), "leaked": os.environ.get("FUNCX_TEST_LEAK")}
    fd, path = tempfile.mkstemp()
    os.close(fd)
    seen["mkstemp"] = path
    with open("mine.txt", "w") as f:  # left for the next task to (not) see
        f.write("mine")
    os.environ["FUNCX_TEST_LEAK"] = leak
    os.chdir("/")  # the worker goes back to its own folder anyway
    return seen


def fails_after_writing() -> None:
    with open("evidence.txt", "w") as f:
        f.write("what went wrong")
    raise ValueError("broke on purpose")


def task_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob("funcx-task-*"))


def test_each_task_runs_in_a_fresh_folder_that_is_removed_after(stack):
    base = root(stack, "tidy")
    with Executor(stack.endpoints["tidy"].endpoint_id, client=stack.client()) as ex:
        first = ex.submit(look_around, "first").result(timeout=60)
        second = ex.submit(look_around, "second").result(timeout=60)
        ex.client.close()
    assert first["pid"] == second["pid"]  # the same worker ran both
    for seen in (first, second):
        cwd = Path(str(seen["cwd"]))
        assert cwd.parent.parent == base and cwd.name == "work"
        assert seen["files"] == []  # fresh: not even the first task's mine.txt
        tmp = str(cwd.parent / "tmp")
        assert seen["tmp"] == [tmp, tmp, tmp] and seen["gettempdir"] == tmp
        assert Path(str(seen["mkstemp"])).parent == Path(tmp)
        assert not cwd.parent.exists()  # removed when the task ended
    assert first["cwd"] != second["cwd"]
    assert second["leaked"] is None  # the first task's variable went with it
    assert task_folders(base) == []


@pytest.mark.parametrize("name", ["keep", "tidy"])
def test_a_failed_tasks_folder_is_kept_only_when_asked(stack, name):
    base = root(stack, name)
    with (Executor(stack.endpoints[name].endpoint_id, client=stack.client()) as ex,
          pytest.raises(ValueError, match="broke on purpose") as info):
        try:
            ex.submit(fails_after_writing).result(timeout=60)
        finally:
            ex.client.close()
    remote = str(info.value.__cause__)
    left = task_folders(base)
    if name == "tidy":
        assert left == [] and "kept" not in remote
        return
    kept = [p for p in left if (p / "work" / "evidence.txt").exists()]
    assert len(kept) == 1, left
    assert f"task_dir: the task's folder is kept at {kept[0]}" in remote
    assert not kept[0].name.endswith(tuple(f".running-{i}" for i in range(10)))
    # a task that succeeds after it on the same worker leaves nothing
    with Executor(stack.endpoints[name].endpoint_id, client=stack.client()) as ex:
        ex.submit(look_around, "after").result(timeout=60)
        ex.client.close()
    assert task_folders(base) == [kept[0]]


def test_a_root_that_cannot_hold_folders_stops_the_start_with_a_message(stack, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for where, says in ((tmp_path / "not-there", "is not an existing folder"),
                        (a_file, "is not an existing folder")):
        stack.configure_endpoint("badroot", {"task_dir": {"root": str(where)}})
        out = stack.endpoint_cli("start", "badroot", check=False)
        assert out.returncode != 0
        assert f"task_dir.root: {where} {says}" in out.stdout + out.stderr
        assert "Traceback" not in out.stderr


def test_task_dir_config_shapes():
    assert parse_config({"task_dir": True}).task_dir.root == ""
    assert parse_config({"task_dir": False}).task_dir is None
    assert parse_config({"task_dir": {"root": "~/t"}}).task_dir.root == str(Path.home() / "t")
    with pytest.raises(ConfigError, match=r"task_dir\.root: .*'rel/path' is not an absolute"):
        parse_config({"task_dir": {"root": "rel/path"}})
    with pytest.raises(ConfigError, match=r"task_dir\.keep: unknown key"):
        parse_config({"task_dir": {"keep": True}})


def sleeps(seconds: float) -> None:
    import time

    time.sleep(seconds)


def test_a_cancelled_tasks_folder_is_removed_by_the_manager(stack):
    from waiting import wait_until

    base = root(stack, "keep")  # kept on failure; a cancel is not one
    before = task_folders(base)
    client = stack.client()
    try:
        with Executor(stack.endpoints["keep"].endpoint_id, client=client) as ex:
            future = ex.submit(sleeps, 600)
            running = wait_until(lambda: [p for p in task_folders(base) if p not in before],
                                 what="the task's folder")
            assert ".running-" in running[0].name  # its worker's while it runs
            assert future.cancel()
            wait_until(lambda: client.get_task(future.task_id)["state"] == "cancelled",
                       what="the cancel")
            wait_until(lambda: task_folders(base) == before, what="the folder to go")
    finally:
        client.close()


def test_sandboxed_workers_get_their_folders_inside_the_sandbox(stack, need):
    """Exec'd workers are told on their command line (--task-dir); with a blank root
    the folders are in the sandbox's private /tmp, which the host does not see."""
    import re
    import shutil

    need(shutil.which("bwrap") is not None, "bubblewrap (apt-get install bubblewrap)")
    import yaml

    name = "sandboxed"  # (on the stack's provider: a manager process, or the endpoint's loop)
    provider = yaml.safe_load((stack.endpoints["keep"].folder / "config.yaml").read_text())
    stack.start_endpoint(name, {"max_workers_per_node": 1, "heartbeat_period_s": 0.5,
                                "heartbeat_threshold_s": 5, "sandbox": "bwrap",
                                "task_dir": {"keep_on_failure": True},
                                "provider": provider["provider"]})
    try:
        with Executor(stack.endpoints[name].endpoint_id, client=stack.client()) as ex:
            first = ex.submit(look_around, "first").result(timeout=60)
            second = ex.submit(look_around, "second").result(timeout=60)
            failed = ex.submit(fails_after_writing).exception(timeout=60)
            ex.client.close()
    finally:
        stack.stop_endpoint(name)
    kept = re.search(r"kept at (\S+)\)", str(failed.__cause__))
    assert kept and kept[1].startswith("/tmp/funcx-task-")
    assert not Path(kept[1]).exists()  # in the sandbox's /tmp, not the host's
    for seen in (first, second):
        cwd = Path(str(seen["cwd"]))
        assert cwd.name == "work" and cwd.parent.name.startswith("funcx-task-")
        assert cwd.parent.parent == Path("/tmp") and seen["files"] == []
        assert Path(str(seen["mkstemp"])).parent == cwd.parent / "tmp"
    assert first["cwd"] != second["cwd"] and second["leaked"] is None


def test_globus_computes_shell_function_runs_in_the_tasks_folder(stack, need):
    """The SDK's own ShellFunction runs in GC_TASK_SANDBOX_DIR and leaves its output
    files there (without it: in the worker's folder, with a warning about a
    misconfigured endpoint): the task's folder, removed after."""
    try:
        from globus_compute_sdk import ShellFunction as GCShellFunction
    except ImportError:
        need(False, "globus-compute-sdk (the extra funcx-flows[globus-compute])")
    base = root(stack, "tidy")
    with Executor(stack.endpoints["tidy"].endpoint_id, client=stack.client()) as ex:
        result = ex.submit(GCShellFunction("pwd; echo $GC_TASK_UUID")).result(timeout=60)
        ex.client.close()
    assert result.returncode == 0 and "sandboxing will not work" not in result.stderr
    where, uuid = result.stdout.split()
    assert Path(where).parent.parent == base and Path(where).name == "work"
    assert where.split("funcx-task-")[1].startswith(uuid)  # the task's own id
    assert task_folders(base) == []  # the output files went with the folder
